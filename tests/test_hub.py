"""Publishing on the Hub: the dataset card, the folder that is uploaded, secrets kept out.

Everything here is offline: ``push_to_hub`` is exercised up to the network (a closed local
port stands in for the Hub), ``save_for_hub`` writes exactly what it would upload.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mstudy
from mstudy import hub
from mstudy.errors import ConfigError, SinkError
from mstudy.records import Rejection
from mstudy.report import Report

datasets = pytest.importorskip("datasets")
pytest.importorskip("pyarrow")

FACTS = Path(__file__).resolve().parent.parent / "examples" / "data" / "facts.jsonl"
CANARY = "sk-canary-7c41e0d9b3a25f68"
HF_CANARY = "hf_canaryCANARYcanary0123456789"
REPLIES = {
    "reverse": "{{ object }} is linked to {{ subject }}.",
    "paraphrase": "Put another way: {{ text }}",
}


def make_study(**kwargs: Any) -> mstudy.Study:
    teacher = mstudy.ScriptedTeacher(reply=REPLIES)
    strategies = [mstudy.Reverse(), mstudy.Paraphrase(n=2, params={"temperature": 0.9})]
    return mstudy.Study(teacher, strategies, ["length", "dedup"], **kwargs)


@pytest.fixture(scope="module")
def studied() -> tuple[mstudy.Study, Any, Report]:
    study = make_study()
    dataset = study.to_dataset(str(FACTS))
    assert study.last_report is not None
    return study, dataset, study.last_report


def split_card(text: str) -> tuple[dict[str, Any], str]:
    import yaml

    match = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert match, text[:200]
    return yaml.safe_load(match.group(1)), match.group(2)


def table_rows(body: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table whose header line is ``header`` (unescaped pipes)."""
    lines = body.splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


# -- the card --------------------------------------------------------------------------------------


def test_card_metadata_and_sections(studied: tuple[mstudy.Study, Any, Report]) -> None:
    study, dataset, report = studied
    card = hub.dataset_card(
        study, report, data=dataset, license="apache-2.0", source="facts.jsonl", tags=["facts"]
    )
    meta, body = split_card(str(card))
    assert meta["license"] == "apache-2.0"
    assert meta["tags"] == ["mstudy", "synthetic", "facts"]
    assert meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [
        {
            "config_name": "default",
            "data_files": [{"split": "train", "path": "data/train-*.parquet"}],
        }
    ]
    assert card.data.license == "apache-2.0"  # huggingface_hub reads the same header
    for heading in ("## Provenance", "## Study configuration", "## Study report"):
        assert heading in body
    assert study.teacher.fingerprint in body
    assert "source records: 12 (from `facts.jsonl`)" in body


def test_card_counts_match_the_report(studied: tuple[mstudy.Study, Any, Report]) -> None:
    study, dataset, report = studied
    _, body = split_card(str(hub.dataset_card(study, report, data=dataset)))
    provenance = {r[0]: int(r[2]) for r in table_rows(body, "| strategy | versions | rows |")}
    accepted = {name: s.accepted for name, s in report.strategies.items()}
    assert provenance == accepted == {"reverse": 12, "paraphrase": 12}
    counts = table_rows(body, "| strategy | requests | accepted | rejected |")
    assert {r[0]: [int(c) for c in r[1:]] for r in counts} == {
        name: [s.requests, s.accepted, sum(s.rejected.values())]
        for name, s in report.strategies.items()
    }
    reasons = table_rows(body, "| strategy | stage | reason | count |")
    assert reasons == [["paraphrase", "filter:dedup", "duplicate", "12"]]
    assert "paraphrase: 24 parsed -> length 24 -> dedup 24 (-12: duplicate 12)" in body
    # without the data, the provenance summary comes from the report and agrees
    _, from_report = split_card(str(hub.dataset_card(study, report)))
    assert table_rows(from_report, "| strategy | versions | rows |") == [
        ["reverse", "", "12"],
        ["paraphrase", "", "12"],
    ]


def test_card_records_strategies_versions_and_generation_params(
    studied: tuple[mstudy.Study, Any, Report],
) -> None:
    study, dataset, report = studied
    config = hub.describe_study(study)
    paraphrase = config["strategies"][1]
    assert (paraphrase["name"], paraphrase["version"]) == ("paraphrase", "1")
    assert paraphrase["settings"]["n"] == 2
    assert paraphrase["settings"]["params"]["temperature"] == 0.9
    assert paraphrase["fingerprint"] == study.fingerprint()["strategies"][1]
    assert [f["name"] for f in config["filters"]] == ["length", "dedup"]
    _, body = split_card(str(hub.dataset_card(study, report, data=dataset)))
    block = body.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(block) == json.loads(json.dumps(config))


def test_no_secret_reaches_the_card_or_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_CANARY)
    remote = mstudy.RemoteTeacher(
        "smollm2",
        base_url="http://scott:tiger-pass@127.0.0.1:9/v1?key=q-secret",
        api_key=CANARY,
        extra_body={"top_k": 5, "api_key": CANARY},
    )

    class KeyedFilter:
        name = "keyed"

        def __init__(self) -> None:
            self.threshold = 0.5
            self.access_token = "opaque-session-value"
            self.endpoint = f"https://user:{CANARY}@judge.example/v1"
            self.judge = remote  # a nested teacher is named by its fingerprint only

        def check(self, example: mstudy.Example) -> mstudy.Example:
            return example

    study = mstudy.Study(remote, ["paraphrase"], [KeyedFilter()])
    rows = [{"id": "r1", "strategy": "paraphrase", "text": f"a row mentioning {HF_CANARY}"}]
    folder = hub.save_for_hub(rows, study, None, tmp_path / "hub", source=f"/data?token={CANARY}")
    published = "".join(
        p.read_text(encoding="utf-8") for p in sorted(folder.glob("*")) if p.is_file()
    )
    for secret in (CANARY, HF_CANARY, "tiger-pass", "q-secret", "opaque-session-value"):
        assert secret not in published
    config = hub.describe_study(study)
    assert config["teacher"]["settings"]["model"] == "smollm2"
    assert config["teacher"]["settings"]["base_url"] == "http://127.0.0.1:9/v1"
    assert config["teacher"]["settings"]["extra_body"] == {"top_k": 5, "api_key": "***"}
    keyed = config["filters"][0]["settings"]
    assert keyed["threshold"] == 0.5 and keyed["access_token"] == "***"
    assert keyed["judge"] == {"name": "remote", "fingerprint": remote.fingerprint}


def test_push_to_hub_never_shows_the_token(
    studied: tuple[mstudy.Study, Any, Report], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    study, dataset, report = studied
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(SinkError, match="me/studied") as caught:
        hub.push_to_hub(dataset, study, report, "me/studied", token=HF_CANARY)
    assert HF_CANARY not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(ConfigError, match="invalid Hub repo id 'not a/valid//id'"):
        hub.push_to_hub(dataset, study, report, "not a/valid//id")


# -- the folder ------------------------------------------------------------------------------------


def load_parquet(files: list[Path], cache: Path) -> Any:
    return datasets.load_dataset(
        "parquet", data_files=[str(f) for f in files], split="train", cache_dir=str(cache)
    )


def test_save_for_hub_writes_the_study_output(
    studied: tuple[mstudy.Study, Any, Report], tmp_path: Path
) -> None:
    study, dataset, report = studied
    folder = hub.save_for_hub(dataset, study, report, tmp_path / "hub", license="mit")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["README.md", "data/train-00000-of-00001.parquet", "mstudy.json"]
    loaded = load_parquet(sorted(folder.glob("data/*.parquet")), tmp_path / "cache")
    assert loaded.to_list() == dataset.to_list()
    info = json.loads((folder / "mstudy.json").read_text(encoding="utf-8"))
    assert info["report"]["accepted"] == report.accepted == loaded.num_rows
    assert "rejection_samples" not in info["report"]  # rejected rows stay local
    assert info["study"] == hub.describe_study(study)
    meta, _ = split_card((folder / "README.md").read_text(encoding="utf-8"))
    assert meta["license"] == "mit"


def test_save_for_hub_shards_and_replaces_older_shards(
    studied: tuple[mstudy.Study, Any, Report], tmp_path: Path
) -> None:
    study, dataset, report = studied
    folder = tmp_path / "hub"
    hub.save_for_hub(dataset, study, report, folder, max_shard_rows=10)
    shards = sorted(folder.glob("data/*.parquet"))
    assert [p.name for p in shards] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert load_parquet(shards, tmp_path / "c1").to_list() == dataset.to_list()
    hub.save_for_hub(dataset, study, report, folder)
    assert [p.name for p in folder.glob("data/*.parquet")] == ["train-00000-of-00001.parquet"]


def test_rows_and_files_give_the_same_dataset(tmp_path: Path) -> None:
    out = tmp_path / "out"
    examples = list(make_study().iter(str(FACTS)))
    report = make_study(sinks=[out / "rows.jsonl", out / "rows.parquet"]).run(str(FACTS))
    expected = hub.as_dataset(examples).to_list()
    assert len(expected) == report.accepted == 24
    for data in (out / "rows.jsonl", out / "rows.parquet", [e.to_row() for e in examples]):
        assert hub.as_dataset(data).to_list() == expected


def test_a_sharded_output_publishes_the_rows_of_one_file(tmp_path: Path) -> None:
    from mstudy.sinks import JSONLSink, ParquetSink

    out = tmp_path / "out"
    single = out / "rows.jsonl"
    sharded = [
        JSONLSink(out / "jsonl-parts", rows_per_shard=7),
        ParquetSink(out / "parquet-parts", rows_per_shard=5),
    ]
    make_study(sinks=[single, *sharded]).run(str(FACTS))
    expected = hub.as_dataset(single).to_list()
    for folder in (out / "jsonl-parts", out / "parquet-parts"):
        assert hub.as_dataset(folder).to_list() == expected
    part = next((out / "parquet-parts").glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:-3])  # a part that no longer matches the manifest
    with pytest.raises(mstudy.sinks.ManifestError) as caught:
        hub.as_dataset(out / "parquet-parts")
    assert caught.value.file == part


def test_bad_data_is_named(tmp_path: Path) -> None:
    study = make_study()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{"id": "b", \n', encoding="utf-8")
    with pytest.raises(SinkError, match=r"bad\.jsonl:2: not a JSON line"):
        hub.save_for_hub(bad, study, None, tmp_path / "hub")
    with pytest.raises(SinkError, match="row 1 is a str, not a mapping"):
        hub.save_for_hub([{"text": "ok"}, "oops"], study, None, tmp_path / "hub")
    with pytest.raises(SinkError, match=r"expected a \.jsonl or \.parquet file"):
        hub.as_dataset(FACTS.parent.parent / "quickstart.toml")
    with pytest.raises(SinkError, match="no such data file"):
        hub.as_dataset(tmp_path / "missing.parquet")
    with pytest.raises(ConfigError, match="split"):
        hub.save_for_hub([{"text": "ok"}], study, None, tmp_path / "hub", split="train/x")
    with pytest.raises(ConfigError, match="needs the data or a report"):
        hub.dataset_card(study)


@pytest.mark.parametrize(
    ("rows", "category"),
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1000, "1K<n<10K"),
        (250_000, "100K<n<1M"),
        (2 * 10**9, "1B<n<10B"),
        (10**13, "n>1T"),
    ],
)
def test_size_category(rows: int, category: str) -> None:
    assert hub.size_category(rows) == category


# -- text that must not break the card -------------------------------------------------------------

awkward = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
).filter(lambda s: s.strip())
special = st.sampled_from(["---", "\n---\n", "a: b", "| x |", "`", "```", "<b>", "#", "'\"", "\\"])


def one_line(text: str) -> str:
    """What the card promises to keep of metadata text: one line, printable characters."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=st.one_of(awkward, special),
    tag=st.one_of(awkward, special),
    reasons=st.lists(st.one_of(awkward, special), min_size=1, max_size=4, unique=True),
)
def test_record_text_cannot_break_the_card(title: str, tag: str, reasons: list[str]) -> None:
    from huggingface_hub import DatasetCard

    study = make_study()
    report = Report(records=1)
    for reason in reasons:
        report.count_rejection(Rejection("r1", "filter:length", reason, reason, "reverse"))
    card = hub.dataset_card(study, report, pretty_name=title, tags=[tag], source=title)
    text = str(card)
    meta = DatasetCard(text).data  # the header huggingface_hub (and the Hub) reads
    title, tag = one_line(title), one_line(tag)
    assert meta.pretty_name == (title or "Studied dataset")
    assert meta.tags == list(dict.fromkeys(["mstudy", "synthetic", *([tag] if tag else [])]))
    assert meta.configs[0]["data_files"][0]["path"] == "data/train-*.parquet"
    _, body = split_card(text)
    for heading in ("## Provenance", "## Study configuration", "## Study report"):
        assert f"\n{heading}\n" in body
    rows = table_rows(body, "| strategy | stage | reason | count |")
    assert len(rows) == len(reasons)
    assert all(len(row) == 4 and row[3] == "1" for row in rows)


def test_import_is_light() -> None:
    code = (
        "import sys, mstudy.hub; heavy = ['torch', 'transformers', 'datasets', 'pyarrow',"
        " 'huggingface_hub']; print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- mstudy run with [hub] -------------------------------------------------------------------------

HUB_CONFIG = """\
[source]
path = "facts.jsonl"

[teacher]
name = "scripted"
reply.reverse = "{{ object }} is linked to {{ subject }}."
reply.paraphrase = "Put another way: {{ text }}"

[[strategies]]
name = "reverse"

[[strategies]]
name = "paraphrase"

[[sinks]]
name = "dataset"

[[sinks]]
name = "jsonl"
path = "out/rows.jsonl"

[hub]
folder = "out/hub"
license = "cc-by-4.0"
pretty_name = "Facts, studied"
tags = ["facts", "reversal"]
language = ["en"]
"""


def present(value: Any) -> Any:
    """A row without its None values (a column store fills absent fields with null)."""
    if isinstance(value, dict):
        return {k: present(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [present(v) for v in value]
    return value


def run_study(tmp_path: Path, text: str, *args: str) -> int:
    from mstudy.cli import main

    (tmp_path / "facts.jsonl").write_bytes(FACTS.read_bytes())
    (tmp_path / "study.toml").write_text(text, encoding="utf-8")
    return main(["run", str(tmp_path / "study.toml"), "-q", *args])


def test_run_with_hub_folder_writes_the_card_and_the_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    assert run_study(tmp_path, HUB_CONFIG) == 0
    captured = capsys.readouterr()
    folder = tmp_path / "out" / "hub"  # relative to the config file
    assert captured.out == ""
    assert f"wrote {folder} (README.md card, mstudy.json, data/)" in captured.err
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["README.md", "data/train-00000-of-00001.parquet", "mstudy.json"]
    meta, body = split_card((folder / "README.md").read_text(encoding="utf-8"))
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en"]
    assert meta["tags"] == ["mstudy", "synthetic", "facts", "reversal"]
    assert meta["pretty_name"] == "Facts, studied"
    assert "source records: 12 (from `facts.jsonl`)" in body
    lines = (tmp_path / "out" / "rows.jsonl").read_text(encoding="utf-8").splitlines()
    jsonl = [json.loads(line) for line in lines]
    rows = pq.read_table(folder / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert len(rows) == len(jsonl) == 24
    assert [present(r) for r in rows] == [present(r) for r in jsonl]
    info = json.loads((folder / "mstudy.json").read_text(encoding="utf-8"))
    assert info["report"]["status"] == "done" and info["report"]["accepted"] == 24
    assert [s["name"] for s in info["study"]["strategies"]] == ["reverse", "paraphrase"]


def test_save_for_hub_option_overrides_the_folder_and_takes_the_repo_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    text = HUB_CONFIG.replace('folder = "out/hub"', 'repo_id = "me/facts-studied"')
    text = text.replace(
        'name = "jsonl"\npath = "out/rows.jsonl"', 'name = "parquet"\npath = "o.parquet"'
    )
    other = tmp_path / "elsewhere"
    # the push fails (no Hub here) after the folder is written: the folder is what it uploads
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", HF_CANARY)
    assert run_study(tmp_path, text, "--save-for-hub", str(other)) == 1
    err = capsys.readouterr().err
    assert f"wrote {other} (README.md card, mstudy.json, data/)" in err
    assert "mstudy: error: cannot push to the Hub dataset repo me/facts-studied" in err
    assert HF_CANARY not in err and "Traceback" not in err
    card = (other / "README.md").read_text(encoding="utf-8")
    assert 'load_dataset("me/facts-studied"' in card  # the card of the repo it goes to
    assert not (tmp_path / "out" / "hub").exists()
    rows = hub.as_dataset(other / "data" / "train-00000-of-00001.parquet").to_list()
    assert rows == hub.as_dataset(tmp_path / "o.parquet").to_list()


def test_push_to_hub_option_pushes_the_jsonl_rows_with_the_card_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, str, dict[str, Any]]] = []

    def fake_push(data: Any, study: Any, report: Any, repo_id: str, **kwargs: Any) -> str:
        assert report.status == "done"
        calls.append((data, repo_id, kwargs))
        return f"https://huggingface.co/datasets/{repo_id}/commit/abc"

    monkeypatch.setattr(hub, "push_to_hub", fake_push)
    text = HUB_CONFIG.replace('folder = "out/hub"', 'repo_id = "me/old"\nprivate = false')
    assert run_study(tmp_path, text, "--push-to-hub", "me/new") == 0
    err = capsys.readouterr().err
    assert "pushed to https://huggingface.co/datasets/me/new/commit/abc" in err
    assert "wrote" not in err  # no folder asked for
    ((data, repo_id, kwargs),) = calls
    assert (data, repo_id) == (tmp_path / "out" / "rows.jsonl", "me/new")
    assert kwargs == {
        "private": False,
        "license": "cc-by-4.0",
        "pretty_name": "Facts, studied",
        "tags": ["facts", "reversal"],
        "language": ["en"],
        "source": "facts.jsonl",
    }  # and no token: huggingface_hub finds HF_TOKEN or the saved login


def test_a_stopped_or_dry_run_publishes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    budget = HUB_CONFIG + "\n[run]\nmax_tokens = 50\n"
    assert run_study(tmp_path, budget) == 0
    err = capsys.readouterr().err
    assert "not published: the run is stopped (stopped early: token budget reached" in err
    assert (tmp_path / "out" / "rows.jsonl").exists()  # the rows so far, resumable
    assert not (tmp_path / "out" / "hub").exists()
    assert run_study(tmp_path, HUB_CONFIG, "--dry-run", "--save-for-hub", str(tmp_path / "x")) == 0
    assert "wrote" not in capsys.readouterr().err
    assert not (tmp_path / "out" / "hub").exists() and not (tmp_path / "x").exists()
    assert run_study(tmp_path, HUB_CONFIG) == 0  # resumed to the end: now it is published
    assert "wrote" in capsys.readouterr().err
    assert (tmp_path / "out" / "hub" / "README.md").is_file()
