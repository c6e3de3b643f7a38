"""``mstudy view``: what a path holds, the lazy row readers, the pages the real command serves
(HTTP, no browser: tests/test_view_browser.py has those) and bad input."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from view_helpers import folder_hash, make_probe, make_study, view

from mstudy.cli import main
from mstudy.view.outputs import ProbeFolder, StudyOutputs, find
from mstudy.view.rows import JsonlRows, ParquetRows, Query

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config of a real study run, its outputs in ``out/`` beside it."""
    return make_study(tmp_path_factory.mktemp("study"))


def _report(config: Path) -> dict[str, object]:
    value: dict[str, object] = json.loads((config.parent / "out" / "report.json").read_text())
    return value


# -- what a path holds ----------------------------------------------------------------------


def test_missing_path_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["view", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mstudy: error: nothing to view at") and "Traceback" not in err


def test_empty_folder_and_unknown_file_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["view", str(tmp_path)]) == 2
    assert "no .jsonl or .parquet output" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["view", str(tmp_path / "notes.txt")]) == 2
    assert "cannot view" in capsys.readouterr().err


def test_find_reads_a_folder_a_config_and_a_file(study: Path) -> None:
    out = study.parent / "out"
    folder = find(out)
    assert isinstance(folder, StudyOutputs)
    assert {t.path.name: t.kind for t in folder.tables()} == {
        "enriched.jsonl": "accepted",
        "enriched.parquet": "accepted",
        "rejects.jsonl": "rejects",
    }
    assert folder.report() == _report(study)
    config = find(study)
    assert isinstance(config, StudyOutputs) and config.source is not None
    assert config.source.get("fact-03") == json.loads(
        (study.parent / "facts.jsonl").read_text().splitlines()[3]
    )
    single = find(out / "rejects.jsonl")
    assert isinstance(single, StudyOutputs) and [t.kind for t in single.tables()] == ["rejects"]
    assert isinstance(find(make_probe(study.parent / "probe")), ProbeFolder)


def test_counts_from_rows_match_the_report(study: Path) -> None:
    outputs = find(study.parent / "out")
    report = _report(study)
    counted = outputs.counted()
    strategies = report["strategies"]
    assert isinstance(strategies, dict)
    for name, stats in strategies.items():
        # both the JSONL and the Parquet sink hold every accepted row: counted once
        assert counted["accepted"][name] == stats["accepted"]
        for item in stats["rejected_by"]:
            assert counted["rejected"][(name, item["stage"], item["reason"])] == item["count"]


# -- the JSON Lines reader ----------------------------------------------------------------------


def _row(i: int, strategy: str = "reverse") -> bytes:
    return json.dumps({"id": f"r{i}", "source_id": f"s{i}", "strategy": strategy}).encode() + b"\n"


def test_jsonl_skips_bad_lines_and_says_which(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(
        _row(0)
        + b"not json\n"
        + b"[1, 2]\n"
        + b'{"x": 1}\n'
        + b"\n"
        + _row(1)
        + b'{"id": "r2", "sou'
    )
    rows = JsonlRows(path)
    rows.refresh()
    assert len(rows) == 2 and rows.kind == "accepted"
    reasons = {s.line: s.reason for s in rows.skips}
    assert set(reasons) == {2, 3, 4, 5}
    assert reasons[2].startswith("not JSON") and reasons[3].startswith("not a JSON object")
    assert reasons[4].startswith("not a accepted row") and reasons[5] == "empty line"
    assert rows.tail is not None and rows.tail.line == 7  # the cut-off last line
    page = rows.page(Query())
    assert [r["id"] for _, r in page.rows] == ["r0", "r1"]


def test_jsonl_index_grows_with_the_file_and_restarts_when_replaced(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_row(0) + b'{"id": "r1", "source_id": "s1", ')
    rows = JsonlRows(path)
    rows.refresh()
    assert len(rows) == 1 and rows.tail is not None
    with open(path, "ab") as handle:  # the writer finishes the line and adds one
        handle.write(b'"strategy": "reverse"}\n' + _row(2, "paraphrase"))
    rows.refresh()
    assert len(rows) == 3 and rows.tail is None
    assert rows.values("strategy") == {"reverse": 2, "paraphrase": 1}
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(_row(7))
    replacement.replace(path)  # an atomic commit replaces the file
    rows.refresh()
    assert [r["id"] for _, r in rows.page(Query()).rows] == ["r7"]


def test_jsonl_limit_reads_only_committed_bytes(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    path.write_bytes(_row(0) + _row(1) + _row(2))
    committed = len(_row(0) + _row(1))
    rows = JsonlRows(path, "accepted", limit=lambda: committed)
    rows.refresh()
    assert len(rows) == 2 and rows.unread == len(_row(2)) and rows.tail is None


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.binary(max_size=40) | st.builds(_row, st.integers(0, 9)), max_size=12))
def test_jsonl_reader_never_fails_on_any_bytes(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "any.jsonl"
    data = b"".join(lines)
    path.write_bytes(data)
    rows = JsonlRows(path)
    rows.refresh()
    complete = data.count(b"\n")
    assert len(rows) + rows.skipped == complete  # every complete line is shown or skipped
    assert (rows.tail is not None) == (not data.endswith(b"\n") and bool(data))
    shown = rows.page(Query(), size=1000).rows
    assert len(shown) == len(rows) and all(isinstance(r, dict) for _, r in shown)


def test_filters_and_search(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    rows_bytes = b""
    for i in range(300):
        row = {"id": f"r{i}", "source_id": f"s{i % 7}", "strategy": ["a", "b"][i % 2]}
        row["text"] = "Needle here" if i in (5, 250) else f"plain {i}"
        rows_bytes += json.dumps(row).encode() + b"\n"
    path.write_bytes(rows_bytes)
    rows = JsonlRows(path)
    page = rows.page(Query(strategy="b"), cursor=50, size=10)
    assert page.total == 150 and [n for n, _ in page.rows] == list(range(101, 121, 2))
    found = rows.page(Query(text="NEEDLE"), size=1)
    assert [n for n, _ in found.rows] == [5] and found.next is not None
    after = rows.page(Query(text="needle"), cursor=found.next, size=5)
    assert [n for n, _ in after.rows] == [250] and after.next is None
    by_source = rows.page(Query(source_id="s3", strategy="a"), size=100)
    assert {r["source_id"] for _, r in by_source.rows} == {"s3"}
    assert len(by_source.rows) == len([i for i in range(300) if i % 7 == 3 and i % 2 == 0])
    assert rows.page(Query(strategy="nope")).rows == []


def test_parquet_reads_by_row_group_and_refuses_another_schema(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(1000)],
            "source_id": [f"s{i}" for i in range(1000)],
            "strategy": ["x" if i % 4 else "y" for i in range(1000)],
        }
    )
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=100)
    rows = ParquetRows(tmp_path / "rows.parquet")
    rows.refresh()
    before = rows.bytes_read
    page = rows.page(Query(strategy="y"), cursor=100, size=5)
    assert page.total == 250 and page.rows[0][1]["id"] == "r400"
    assert (
        rows.bytes_read - before
        < 2 * pq.ParquetFile(tmp_path / "rows.parquet").metadata.row_group(4).total_byte_size
    )
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), tmp_path / "other.parquet")
    other = ParquetRows(tmp_path / "other.parquet")
    other.refresh()
    assert other.kind == "other" and "another schema" in str(other.error)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    broken = ParquetRows(tmp_path / "broken.parquet")
    broken.refresh()
    assert broken.error is not None and "cannot read" in broken.error and len(broken) == 0


# -- the pages of the real command ----------------------------------------------------------------


def test_pages_of_a_real_study_and_read_only(study: Path) -> None:
    out = study.parent / "out"
    before = folder_hash(study.parent)
    report = _report(study)
    with view(str(study), "--refresh", "0") as page:
        status, home = page.get("/")
        assert status == 200
        assert f'id="total-accepted">{report["accepted"]}<' in home
        assert f'id="total-rejected">{report["rejected"]}<' in home
        assert "subject missing" in home and "too short" in home
        status, rows = page.get("/rows?strategy=paraphrase")
        assert status == 200 and 'class="provenance"' in rows
        assert "&#34;template_hash&#34;" in rows or '"template_hash"' in rows
        # the source record beside the row: its own fields, not the row's
        assert "<dt>subject</dt><dd>Olaf Brandt</dd>" in rows
        status, rejects = page.get("/rejects?stage=parse&reason=subject+missing")
        assert status == 200 and 'class="reason">subject missing<' in rejects
        assert "I cannot help with that request." in rejects  # the teacher's raw reply
        assert page.json("/api/version")["live"] is False
        status, missing = page.get("/nope")
        assert status == 404 and "Traceback" not in missing and 'id="error-message"' in missing
        status, body = page.get("/rows?at=-4&file=99&q=%00")  # odd parameters: still a page
        assert status == 200 and "no matching rows" in body
    assert folder_hash(study.parent) == before
    assert (out / "report.json").exists()


def test_funnel_chart_is_a_png(study: Path) -> None:
    pytest.importorskip("matplotlib")
    from mstudy.view.charts import funnel_png

    png = funnel_png({"reverse": 3, "paraphrase": 1}, {"reverse": {"parse": 2, "filter:length": 1}})
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_bad_files_in_a_folder_are_named_on_the_page(study: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    out.mkdir()
    source = study.parent / "out"
    (out / "enriched.jsonl").write_bytes(
        (source / "enriched.jsonl").read_bytes() + b"this is not json\n" + b'{"id": "cut'
    )
    pq.write_table(pa.table({"a": [1]}), out / "other.parquet")
    with view(str(out), "--refresh", "0") as page:
        status, home = page.get("/")
        assert status == 200 and 'id="skips"' in home
        assert "other.parquet: not mstudy output rows: another schema" in home
        assert "line 5: not JSON" in home or re.search(r"line \d+: not JSON", home)
        assert "the last line has no newline" in home
        status, rows = page.get("/rows")
        good = (source / "enriched.jsonl").read_bytes().count(b"\n")
        assert status == 200 and rows.count('class="card row"') == good


def test_live_journal_of_a_stopped_run_then_its_outputs(tmp_path: Path) -> None:
    """A run stopped by its budget keeps its journal: the page shows the journal's rows; once
    the run is finished the journal is gone and the page shows the outputs."""
    config = make_study_with_budget(tmp_path)
    out = tmp_path / "out"
    assert (out / ".study.journal" / "checkpoint.json").is_file()
    checkpoint = json.loads((out / ".study.journal" / "checkpoint.json").read_text())
    with view(str(out), "--refresh", "0") as page:
        status, home = page.get("/")
        assert status == 200 and 'id="live"' in home and "stopped" in home
        assert f"{checkpoint['items_done']} source items decided" in home
        first = page.json("/api/version")
        assert first["live"] is True
        text = config.read_text().replace("max_tokens = 1500\n", "")
        config.write_text(text)
        assert main(["run", str(config), "-q"]) == 0
        assert not (out / ".study.journal").exists()
        now = page.json("/api/version")
        assert now["live"] is False and now["version"] != first["version"]
        status, home = page.get("/")
        assert 'id="live"' not in home
        lines = (out / "enriched.jsonl").read_bytes().count(b"\n")
        assert f'<td>accepted</td><td class="n">{lines}</td>' in home


def make_study_with_budget(folder: Path) -> Path:
    from view_helpers import FACTS, STUDY

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "facts.jsonl").write_bytes(FACTS.read_bytes())
    config = folder / "study.toml"
    config.write_text(STUDY + "\n[run]\nmax_tokens = 1500\ncheckpoint_every = 0.0\n")
    assert main(["run", str(config), "-q"]) == 0
    return config


def test_probe_folder_page(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    probe = make_probe(tmp_path / "probe")
    before = folder_hash(probe)
    with view(str(probe), "--refresh", "0") as page:
        status, home = page.get("/")
        assert status == 200
        assert "+ teacher reversals" in home and "forward only" in home
        for mark in ("true", "false", "undecided"):
            assert f'<td class="verdict-{mark}">{mark}</td>' in home
        status, only = page.get("/?verdict=false")
        assert "Di is the father of Cy." in only and "Bo is the child of Ann." not in only
        status, _ = page.get("/probe/chart.png")
        assert status == 200
        status, body = page.get("/rows")
        assert status == 404 and "probe folder" in body
    assert folder_hash(probe) == before


# -- a million rows -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1,000,000-row output (about 90 MB), written in one go."""
    path = tmp_path_factory.mktemp("big") / "enriched.jsonl"
    template = b'{"id":"r%d","source_id":"s%d","strategy":"%s","text":"row %d"}\n'
    names = (b"reverse", b"paraphrase", b"explain")
    with open(path, "wb") as handle:
        for block in range(0, 1_000_000, 100_000):
            handle.write(
                b"".join(
                    template % (i, i // 3, names[i % 3], i) for i in range(block, block + 100_000)
                )
            )
    return path


def test_a_million_rows_page_without_reading_the_file(million: Path) -> None:
    rows = JsonlRows(million)
    rows.refresh()
    assert len(rows) == 1_000_000 and rows.skipped == 0
    size = million.stat().st_size
    assert size <= rows.bytes_read < size * 1.01  # indexing reads the file once
    for cursor in (0, 500_000, 999_950):
        before = rows.bytes_read
        page = rows.page(Query(), cursor=cursor, size=50)
        assert page.rows[0][1]["id"] == f"r{cursor}"
        assert rows.bytes_read - before < 10_000  # a page reads its own rows only
    before = rows.bytes_read
    page = rows.page(Query(strategy="explain"), cursor=300_000, size=50)
    assert page.total == 333_333 and page.rows[0][0] == 900_002
    assert rows.bytes_read - before < 200_000


def test_a_million_rows_served(million: Path) -> None:
    with view(str(million), "--refresh", "0") as page:
        started = time.monotonic()
        status, body = page.get("/rows?at=999950")
        assert status == 200 and "r999999" in body
        status, body = page.get("/rows?strategy=paraphrase&at=200000")
        assert status == 200 and "r600001" in body
        assert time.monotonic() - started < 10
        status, home = page.get("/")
        assert status == 200 and 'id="total-accepted">1,000,000<' in home


def test_view_help_lists_its_options() -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "mstudy", "view", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for option in ("--port", "--open", "--source", "--refresh"):
        assert option in result.stdout
