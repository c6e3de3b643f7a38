"""Documents as a source: real documents (Debian's license texts, the Python docs' HTML, a PDF
shipped by a Debian package), bad input per file, stable ids, the study and the TOML config.

The real documents come from Debian packages (CI installs them: see ``.ci/setup``); the tests
that need them are skipped where they are absent, unless ``MSTUDY_REQUIRE_REAL_DOCS=1``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import mstudy
from mstudy import Record, Rejection
from mstudy.documents import DEFAULT_SUFFIXES, Documents, approx_tokens
from mstudy.documents.extract import extract
from mstudy.errors import ConfigError
from mstudy.sources import iter_source
from tests.conftest import read_jsonl

LICENSES = Path("/usr/share/common-licenses")
PYTHON_DOCS = Path("/usr/share/doc/python3.11/html")
PDF = Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")  # shared-mime-info


def need(path: Path, package: str) -> Path:
    if path.exists():
        return path
    reason = f"{path} is absent (Debian package {package})"
    if os.environ.get("MSTUDY_REQUIRE_REAL_DOCS") == "1":
        pytest.fail(f"MSTUDY_REQUIRE_REAL_DOCS=1 but {reason}")
    pytest.skip(reason)


def split(items: Iterable[Record | Rejection]) -> tuple[list[Record], list[Rejection]]:
    records: list[Record] = []
    rejections: list[Rejection] = []
    for item in items:
        (records if isinstance(item, Record) else rejections).append(item)  # type: ignore[arg-type]
    return records, rejections


def check_chunks(folder: Path, records: list[Record], max_tokens: int) -> None:
    """Every chunk is its document's extracted text at its offsets, within the bound, and
    the chunks of each document cover all of its text."""
    by_path: dict[str, list[Record]] = {}
    for record in records:
        by_path.setdefault(record.fields["path"], []).append(record)
    for path, chunks in by_path.items():
        location = folder / path if folder.is_dir() else folder
        text = extract(location.suffix, location.read_bytes()).text
        covered = bytearray(len(text))
        assert [c.fields["chunk"] for c in chunks] == list(range(len(chunks)))
        for chunk in chunks:
            start, end = chunk.fields["start"], chunk.fields["end"]
            assert text[start:end] == chunk.fields["text"]
            assert chunk.fields["tokens"] == approx_tokens(chunk.fields["text"]) <= max_tokens
            assert chunk.fields["id"] == chunk.id
            covered[start:end] = b"\x01" * (end - start)
        assert all(covered[i] for i, c in enumerate(text) if not c.isspace()), path


# -- real documents ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def licenses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's license texts, as .txt files (they have no suffix where Debian installs them)."""
    source = need(LICENSES, "base-files")
    folder = tmp_path_factory.mktemp("licenses")
    for path in sorted(source.iterdir()):
        if path.is_file() and not path.is_symlink():
            shutil.copyfile(path, folder / f"{path.name}.txt")
    return folder


def test_license_texts_become_chunks_that_map_back_and_cover_them(licenses: Path) -> None:
    records, rejections = split(iter_source(Documents(licenses, max_tokens=256, overlap=32)))
    assert rejections == []
    check_chunks(licenses, records, 256)
    gpl = [r for r in records if r.fields["path"] == "GPL-3.txt"]
    assert gpl[0].fields["title"] == "GPL-3"  # a .txt file's title is its stem
    assert "GNU GENERAL PUBLIC LICENSE" in gpl[0].fields["text"]
    assert any("Version 3, 29 June 2007" in r.fields["text"] for r in gpl)
    assert [r.fields["path"] for r in records] == sorted(r.fields["path"] for r in records)


def test_python_documentation_html_keeps_code_and_drops_navigation(tmp_path: Path) -> None:
    docs = need(PYTHON_DOCS, "python3.11-doc")
    pages = ["library/functools.html", "library/json.html", "tutorial/introduction.html"]
    for page in pages:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(docs / page, tmp_path / page)
    records, rejections = split(Documents(tmp_path, max_tokens=300, overlap=40).records())
    assert rejections == []
    check_chunks(tmp_path, records, 300)
    assert {r.fields["path"] for r in records} == set(pages)
    functools = [r for r in records if r.fields["path"] == "library/functools.html"]
    assert functools[0].fields["title"].startswith("functools — Higher-order functions")
    text = "\n\n".join(r.fields["text"] for r in functools)
    assert "@cache\ndef factorial(n):\n    return n * factorial(n-1) if n else 1" in text
    assert "Navigation" not in text and "¶" not in text  # the sidebar, the anchors


def test_a_pdf_shipped_by_debian_gives_its_text_and_title() -> None:
    pdf = need(PDF, "shared-mime-info")
    records, rejections = split(Documents(pdf, max_tokens=200, overlap=20).records())
    assert rejections == []
    check_chunks(pdf, records, 200)
    assert records[0].fields["path"] == PDF.name
    assert "Shared MIME-info Database" in records[0].fields["text"]
    assert len(records) > 20


# -- bad input --------------------------------------------------------------------------------


def encrypted_pdf(path: Path) -> None:
    """A real PDF encrypted with a user password (no encrypted PDF ships with Debian's docs)."""
    pypdf = pytest.importorskip("pypdf")
    writer = pypdf.PdfWriter()
    writer.add_page(pypdf.PdfReader(need(PDF, "shared-mime-info")).pages[0])
    writer.encrypt("secret", algorithm="RC4-128")
    with open(path, "wb") as handle:
        writer.write(handle)


def test_each_bad_document_is_a_rejection_naming_it_and_the_rest_go_on(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.md").write_text("# Good\n\nA sentence here. Another one.\n")
    (folder / "sub" / "deeper.txt").write_text("Deeper text.\n")
    executable = Path(shutil.which("true") or "/bin/true")
    (folder / "binary.txt").write_bytes(executable.read_bytes()[:4000])
    (folder / "latin1.txt").write_bytes("Café crème".encode("latin-1"))
    (folder / "empty.md").write_bytes(b"")
    (folder / "script.html").write_text(
        "<html><head><script>var a = 1;</script></head><body><script>go()</script></body></html>"
    )
    (folder / "corrupt.pdf").write_bytes(need(PDF, "shared-mime-info").read_bytes()[:3000])
    encrypted_pdf(folder / "locked.pdf")
    (folder / "big.txt").write_text("word " * 40_000)
    (folder / ".hidden.txt").write_text("never read")
    (folder / "notes.docx").write_bytes(b"PK\x03\x04 not a readable type")
    (folder / "loop").symlink_to(folder)  # a link back: read once
    (folder / "dangling.txt").symlink_to(folder / "nowhere.txt")
    os.mkfifo(folder / "pipe.txt")
    (folder / "page.xhtml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
        "<head><title>X</title></head><body><p>An XHTML page.</p></body></html>"
    )
    (folder / "russian.txt").write_text("Москва — столица России. " * 40)
    (folder / "chinese.md").write_text("# 标题\n\n" + "北京是中国的首都。" * 60)

    source = Documents(
        folder, max_tokens=64, overlap=8, max_bytes=100_000, suffixes=[*DEFAULT_SUFFIXES, ".xhtml"]
    )
    records, rejections = split(source.records())
    reasons = {r.source_id: r.reason for r in rejections}
    assert reasons == {
        "big.txt": "too_large",
        "binary.txt": "not_text",
        "corrupt.pdf": "unreadable_pdf",
        "dangling.txt": "unreadable",
        "empty.md": "empty",
        "latin1.txt": "invalid_utf8",
        "locked.pdf": "encrypted",
        "pipe.txt": "unreadable",
        "script.html": "empty",
    }
    for rejection in rejections:
        assert rejection.stage == "input" and rejection.detail.startswith(rejection.source_id)
    assert "byte 3" in next(r.detail for r in rejections if r.source_id == "latin1.txt")
    paths = [r.fields["path"] for r in records]
    assert sorted(set(paths)) == [
        "chinese.md",
        "good.md",
        "page.xhtml",
        "russian.txt",
        "sub/deeper.txt",
    ]
    assert paths == sorted(paths)  # files in sorted order, chunks in order within each
    check_chunks(folder, records, 64)
    chinese = [r for r in records if r.fields["path"] == "chinese.md"]
    assert chinese[0].fields["title"] == "标题" and len(chinese) > 3
    assert all(r.fields["text"].endswith(("。", "标题")) for r in chinese)  # sentence ends
    good = next(r for r in records if r.fields["path"] == "good.md")
    assert good.fields["title"] == "Good"

    # In a study: the rejections go to the rejects sink and the report counts them.
    study = mstudy.Study(
        mstudy.ScriptedTeacher("Put simply, this passage is about {{ text[:40] }} and more."),
        ["explain"],
        sinks=[tmp_path / "out.jsonl"],
        rejects=tmp_path / "rejects.jsonl",
    )
    report = study.run(source)
    assert report.records == len(records)
    assert sum(report.input_rejected.values()) == len(rejections) == 9
    rejected_rows = read_jsonl(tmp_path / "rejects.jsonl")
    assert {(r["source_id"], r["reason"]) for r in rejected_rows} == set(reasons.items())
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert {row["source_id"] for row in rows} == {r.id for r in records}


def test_settings_are_checked_when_the_source_is_made(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Text.")
    with pytest.raises(ConfigError) as overlap:
        Documents(tmp_path, max_tokens=10, overlap=10)
    assert overlap.value.parameter == "overlap"
    with pytest.raises(ConfigError) as missing:
        Documents(tmp_path / "nowhere")
    assert missing.value.parameter == "path"
    (tmp_path / "a.rtf").write_text("x")
    with pytest.raises(ConfigError, match=r"\.rtf"):
        Documents(tmp_path / "a.rtf")
    with pytest.raises(ConfigError) as suffixes:
        Documents(tmp_path, suffixes=[".doc"])
    assert suffixes.value.parameter == "suffixes"
    only_md = Documents(tmp_path, suffixes=["md"])
    assert only_md.files() == []


# -- ids --------------------------------------------------------------------------------------


def test_ids_are_stable_and_unaffected_by_other_files(tmp_path: Path) -> None:
    text = "First paragraph here. It has two sentences.\n\n" + "More words follow. " * 50
    alone, crowded = tmp_path / "alone", tmp_path / "crowded"
    for folder in (alone, crowded):
        (folder / "notes").mkdir(parents=True)
        (folder / "notes" / "doc.txt").write_text(text)
    (crowded / "aaa.txt").write_text("Another document, read first. " * 30)
    (crowded / "notes" / "zzz.md").write_text("# Z\n\nAnd one read last.")

    def ids(folder: Path) -> list[str]:
        records, _ = split(Documents(folder, max_tokens=40, overlap=10).records())
        return [r.id for r in records if r.fields["path"] == "notes/doc.txt"]

    first = ids(alone)
    assert len(first) > 3 and len(set(first)) == len(first)
    assert ids(alone) == first == ids(crowded)
    (alone / "notes" / "doc.txt").write_text(text.removesuffix("More words follow. ") + "End.")
    changed = ids(alone)  # a chunk's id changes with its content, and no other's does
    assert changed[:-1] == first[:-1] and changed[-1] != first[-1]


# -- tokenizers -------------------------------------------------------------------------------


def test_the_teachers_tokenizer_bounds_the_chunks(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.tiny_model import build_tokenizer

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(
        "The capital of France is Paris. Water boils at one hundred degrees.\n\n" * 30
    )
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path / "model")  # counting tokens loads no model
    teacher = mstudy.TransformersTeacher(tmp_path / "model")
    for given in (teacher, tokenizer, str(tmp_path / "model")):
        source = Documents(tmp_path / "docs", max_tokens=48, overlap=12, tokenizer=given)
        records, _ = split(source.records())
        assert len(records) > 5
        for record in records:
            counted = len(tokenizer(record.fields["text"], add_special_tokens=False)["input_ids"])
            assert counted == record.fields["tokens"] <= 48
    assert "teacher" in Documents(tmp_path / "docs", tokenizer=teacher).tokens_counted_by
    assert Documents(tmp_path / "docs").tokens_counted_by.startswith("approximate")


# -- config -----------------------------------------------------------------------------------


def test_a_toml_source_of_kind_documents(tmp_path: Path) -> None:
    from mstudy.config import load_config

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n" + "Some sentence in a document. " * 40)
    (tmp_path / "docs" / "b.txt").write_bytes(b"\x00\x01binary")
    config = tmp_path / "study.toml"
    config.write_text(
        '[source]\nkind = "documents"\npath = "docs"\nmax_tokens = 50\noverlap = 5\n\n'
        '[teacher]\nname = "scripted"\nreply = "In other words, {{ text[:30] }} is said."\n\n'
        '[[strategies]]\nname = "paraphrase"\n\n'
        '[[sinks]]\nname = "jsonl"\npath = "out/rows.jsonl"\n\n'
        '[rejects]\nname = "jsonl"\npath = "out/rejects.jsonl"\n'
    )
    from mstudy.cli import main

    assert main(["run", str(config), "--dry-run"]) == 0  # counts requests over the chunks
    loaded = load_config(config)
    loaded.check_source()
    study, source = loaded.build(progress=False)
    assert isinstance(source, Documents) and source.max_tokens == 50
    report = study.run(source)
    assert report.records > 5
    rejected = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    inputs = [(r["source_id"], r["reason"]) for r in rejected if r["stage"] == "input"]
    assert inputs == [("b.txt", "not_text")]


@pytest.mark.parametrize(
    ("source", "parameter"),
    [
        ('kind = "documents"\npath = "docs"\noverlap = 60\nmax_tokens = 50', "overlap"),
        ('kind = "pages"\npath = "docs"', "kind"),
        ('path = "docs.jsonl"\nmax_tokens = 50', "max_tokens"),
        ('kind = "documents"\npath = "docs"\nmax_tokens = "big"', "max_tokens"),
        ('kind = "documents"\npath = "docs"\ntokenizer = 3', "tokenizer"),
    ],
)
def test_bad_documents_settings_in_toml_name_the_key(
    tmp_path: Path, source: str, parameter: str
) -> None:
    from mstudy.config import parse_config

    (tmp_path / "docs").mkdir()
    text = (
        f'[source]\n{source}\n\n[teacher]\nname = "scripted"\n\n[[strategies]]\nname = "reverse"\n'
    )
    with pytest.raises(ConfigError) as caught:
        config = parse_config(text, tmp_path / "study.toml")
        config.build()
    assert caught.value.parameter == parameter
    assert caught.value.line is not None


def test_a_library_or_tokenizer_failing_on_one_file_rejects_that_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mstudy.documents import extract as extract_module

    (tmp_path / "a.txt").write_text("Fine text here.")
    (tmp_path / "b.md").write_text("# B\n\nThe reader breaks on this one.")
    (tmp_path / "c.txt").write_text("Boom is a word the tokenizer hates.")

    def broken_reader(data: bytes) -> Any:
        raise RuntimeError("the reader broke")

    def picky(text: str) -> int:
        if "Boom" in text:
            raise ValueError("cannot tokenize Boom")
        return len(text.split())

    monkeypatch.setitem(extract_module.READERS, ".md", broken_reader)
    records, rejections = split(Documents(tmp_path, tokenizer=picky, overlap=0).records())
    assert [r.fields["path"] for r in records] == ["a.txt"]
    assert [(r.source_id, r.reason) for r in rejections] == [
        ("b.md", "extraction_failed"),
        ("c.txt", "tokenizer_failed"),
    ]
    assert "the reader broke" in rejections[0].detail
