"""Publish an enriched dataset on the Hugging Face Hub with a card that says how it was made.

::

    dataset = study.to_dataset("facts.jsonl")
    save_for_hub(dataset, study, study.last_report, "out/hub")   # exactly what push uploads
    push_to_hub(dataset, study, study.last_report, "me/facts-studied")   # a private repo

The folder holds ``data/<split>-NNNNN-of-NNNNN.parquet``, ``mstudy.json`` (the study
configuration and the report's counts) and ``README.md``, the dataset card: a YAML header
(license, task categories, tags ``mstudy`` and ``synthetic``, size category, the data files)
and a body with the study configuration (teacher, strategies with versions and generation
parameters, filters), a provenance summary and the report's funnel and rejections.

Secrets never reach the card: components are described by their public settings only, values
under names such as ``api_key`` or ``token`` are masked, URLs lose their credentials and query,
and the text is scrubbed of the token passed in and of the usual key environment variables.
``huggingface_hub`` and ``datasets`` are imported when a function is called.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from mstudy._version import __version__
from mstudy.errors import ConfigError, SinkError
from mstudy.interfaces import Fingerprinted
from mstudy.report import Report
from mstudy.sinks.base import import_optional

if TYPE_CHECKING:
    import datasets
    from huggingface_hub import DatasetCard

    from mstudy.study import Study

__all__ = [
    "as_dataset",
    "check_repo_id",
    "dataset_card",
    "describe_study",
    "provenance_summary",
    "push_to_hub",
    "save_for_hub",
    "size_category",
]

log = logging.getLogger(__name__)

Data = Any
"""A ``datasets.Dataset``, an iterable of rows (dicts or Examples), or a .jsonl/.parquet path."""

SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "MSTUDY_API_KEY")
_SECRET_KEY = re.compile(
    r"(?:^|[_-])(?:(?:api|access|secret|private|auth)[_-]?key|apikey|token|secret|passw(?:or)?d"
    r"|auth(?:orization)?|credentials?|bearer|cookie)$",
    re.I,
)
_SECRET_TEXT = re.compile(r"\b(?:hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,})")
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.I)
_SIZES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)
_MASK = "***"
_OMIT = object()


# -- describing a study without its secrets ------------------------------------------------------


def _clean_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _clean_text(text: str) -> str:
    """URLs without credentials or query, key-like tokens masked, the home folder as ``~``."""
    text = _URL.sub(lambda m: _clean_url(m.group(0)), text)
    text = _SECRET_TEXT.sub(_MASK, text)
    home = os.path.expanduser("~")
    return text.replace(home, "~") if len(home) > 1 else text


def _public(value: Any, depth: int = 0) -> Any:
    """A JSON-ready view of a setting, or ``_OMIT`` for objects that do not describe themselves."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, os.PathLike):
        return _clean_text(os.fspath(value))
    if depth > 8:
        return _OMIT
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if _SECRET_KEY.search(str(key)) and item:
                out[str(key)] = _MASK
            elif (view := _public(item, depth + 1)) is not _OMIT:
                out[str(key)] = view
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [v for v in (_public(i, depth + 1) for i in items) if v is not _OMIT]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _public(to_dict(), depth + 1)
    if isinstance(value, Fingerprinted):  # a nested teacher, say
        name, fingerprint = getattr(value, "name", None), value.fingerprint
        if isinstance(name, str) and isinstance(fingerprint, str):
            return {"name": name, "fingerprint": fingerprint}
    return _OMIT


def _describe(component: Any, fingerprint: str) -> dict[str, Any]:
    kind = type(component)
    out: dict[str, Any] = {"name": str(getattr(component, "name", kind.__name__))}
    version = getattr(component, "version", None)
    if isinstance(version, str):
        out["version"] = version
    out["class"] = f"{kind.__module__}.{kind.__qualname__}"
    out["fingerprint"] = fingerprint
    attributes = getattr(component, "__dict__", {})
    settings = _public({k: v for k, v in attributes.items() if not k.startswith("_")})
    if settings:
        out["settings"] = settings
    return out


def describe_study(study: Study) -> dict[str, Any]:
    """The study's configuration, JSON-ready and free of secrets.

    Each component is given by name, version (strategies), class, fingerprint and its public
    settings (generation parameters included); the teacher also by its ``repr``.
    """
    prints = study.fingerprint()
    teacher = _describe(study.teacher, prints["teacher"])
    teacher["description"] = _clean_text(repr(study.teacher))
    return {
        "mstudy_version": __version__,
        "teacher": teacher,
        "strategies": [
            _describe(s, f) for s, f in zip(study.strategies, prints["strategies"], strict=True)
        ],
        "filters": [_describe(f, p) for f, p in zip(study.filters, prints["filters"], strict=True)],
        "id_field": study.id_field,
    }


# -- the data --------------------------------------------------------------------------------------


def _jsonl_rows(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SinkError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
            if not isinstance(row, dict):
                raise SinkError(f"{path}:{number}: a JSON {type(row).__name__}, not an object")
            yield row


def as_dataset(data: Data) -> datasets.Dataset:
    """``data`` as a ``datasets.Dataset`` (rows get the sinks' column type unification)."""
    datasets = import_optional("datasets", "datasets", "Publishing on the Hub")
    from mstudy.sinks.hf import DatasetSink

    if isinstance(data, datasets.Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        read = _read_path(Path(data), datasets)
        if isinstance(read, datasets.Dataset):
            return read
        data = read
    if isinstance(data, Mapping) or not isinstance(data, Iterable):
        raise SinkError(
            "expected a datasets.Dataset, rows or a .jsonl/.parquet path, "
            f"not {type(data).__name__}"
        )
    with DatasetSink() as sink:
        sink.write(data)  # the sink names a row that is not a mapping
    return sink.dataset


def _read_path(path: Path, datasets: Any) -> datasets.Dataset | Iterable[Any]:
    """A ``.parquet`` file as a dataset; a ``.jsonl`` file's rows; a sharded sink's folder's
    rows, each part checked against its manifest."""
    if path.is_dir():
        from mstudy.sinks.sharded import read_sharded

        return read_sharded(path)
    if not path.is_file():
        raise SinkError(f"no such data file: {path}")
    if path.suffix == ".parquet":
        return datasets.Dataset.from_parquet(str(path))
    if path.suffix != ".jsonl":
        raise SinkError(f"{path}: expected a .jsonl or .parquet file or a sharded output folder")
    return _jsonl_rows(path)


def provenance_summary(dataset: datasets.Dataset) -> dict[str, Any]:
    """Rows per strategy (with strategy versions), per teacher fingerprint, and source records."""
    per_strategy: Counter[str] = Counter()
    versions: dict[str, set[str]] = {}
    teachers: Counter[str] = Counter()
    sources: set[str] = set()
    wanted = [c for c in ("strategy", "source_id", "provenance") if c in dataset.column_names]
    for batch in dataset.select_columns(wanted).iter(batch_size=1000):
        count = len(next(iter(batch.values()))) if batch else 0
        strategies = batch.get("strategy") or [None] * count
        provenances = batch.get("provenance") or [None] * count
        for strategy, source_id, prov in zip(
            strategies, batch.get("source_id") or [None] * count, provenances, strict=True
        ):
            name = str(strategy) if strategy is not None else "(none)"
            per_strategy[name] += 1
            prov = prov if isinstance(prov, Mapping) else {}
            if prov.get("strategy_version") is not None:
                versions.setdefault(name, set()).add(str(prov["strategy_version"]))
            teachers[str(prov.get("teacher") or "(unknown)")] += 1
            for sid in prov.get("source_ids") or ([source_id] if source_id is not None else []):
                sources.add(str(sid))
    return {
        "rows": dataset.num_rows,
        "strategies": {
            name: {"rows": n, "versions": sorted(versions.get(name, ()))}
            for name, n in per_strategy.items()
        },
        "teachers": dict(teachers.most_common()),
        "source_records": len(sources),
    }


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for a row count."""
    for bound, label in _SIZES:
        if rows < bound:
            return label
    return "n>1T"


# -- the card --------------------------------------------------------------------------------------


def _cell(value: Any, limit: int = 200) -> str:
    """Text that stays in one Markdown table cell and renders as text, not HTML."""
    text = " ".join(str(value).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    """Metadata text on one line, without control characters (YAML would not keep them)."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())


def _code(value: Any) -> str:
    """Inline code on one line (backticks inside become quotes)."""
    return "`" + " ".join(str(value).split()).replace("`", "'") + "`"


def _fenced(text: str, language: str = "") -> str:
    """A code block whose fence is longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _data_path(split: str, index: int, shards: int) -> str:
    return f"data/{split}-{index:05d}-of-{shards:05d}.parquet"


def _body(
    title: str,
    config: Mapping[str, Any],
    summary: Mapping[str, Any],
    report: Report | None,
    source: str | None,
    repo_id: str | None,
    split: str,
) -> str:
    teacher = config["teacher"]
    strategies = ", ".join(_code(s["name"]) for s in config["strategies"])
    where = f'"{repo_id}"' if repo_id else f'"parquet", data_files="data/{split}-*.parquet"'
    parts = [
        f"# {_cell(title)}",
        f"Written by a teacher model studying a source dataset with mstudy "
        f"{__version__}: the teacher {_code(teacher['name'])} applied the strategies "
        f"{strategies}; every row carries its provenance (source record, strategy and "
        "version, template hash, teacher fingerprint, generation parameters, sample).",
        _fenced(
            f"from datasets import load_dataset\n\nds = load_dataset({where}, split={split!r})",
            "python",
        ),
        "## Provenance",
        "\n".join(
            [
                f"- rows: {summary['rows']}",
                f"- source records: {summary['source_records']}"
                + (f" (from {_code(_clean_text(source))})" if source else ""),
                f"- teacher: {_code(teacher['description'])} "
                f"(fingerprint {_code(teacher['fingerprint'])})",
            ]
        ),
        _table(
            ("strategy", "versions", "rows"),
            (
                (name, ", ".join(s["versions"]), s["rows"])
                for name, s in summary["strategies"].items()
            ),
        ),
    ]
    if len(summary["teachers"]) > 1:
        parts.append(_table(("teacher fingerprint", "rows"), summary["teachers"].items()))
    parts += [
        "## Study configuration",
        "Teacher, strategies (with versions and generation parameters) and filters, with "
        "their fingerprints and public settings:",
        "<details><summary>study configuration (JSON)</summary>",
        _fenced(json.dumps(config, indent=2), "json"),
        "</details>",
    ]
    if report is not None:
        parts += _report_sections(report)
    return "\n\n".join(parts) + "\n"


def _report_sections(report: Report) -> list[str]:
    data = report.to_dict()
    parts = [
        "## Study report",
        f"Status {_cell(data['status'])}: {data['records']} records studied, "
        f"{data['accepted']} rows accepted, {data['rejected']} rejected; {data['requests']} "
        f"teacher requests ({data['cached']} from the cache), {data['prompt_tokens']} prompt "
        f"and {data['completion_tokens']} completion tokens, {data['elapsed_s']:.1f} s.",
        _table(
            ("strategy", "requests", "accepted", "rejected"),
            (
                (name, s["requests"], s["accepted"], s["rejected"])
                for name, s in data["strategies"].items()
            ),
        ),
    ]
    if report.filters:
        lines = [stats.funnel_line(name) for name, stats in report.strategies.items()]
        parts += ["Filter funnel:", _fenced("\n".join(lines))]
    reasons = [("(input)", "input", r, c) for r, c in data["input_rejected"].items()]
    for name, s in data["strategies"].items():
        reasons += [(name, r["stage"], r["reason"], r["count"]) for r in s["rejected_by"]]
    if reasons:
        parts += [
            "Rejections by reason:",
            _table(("strategy", "stage", "reason", "count"), reasons),
        ]
    return parts


def dataset_card(
    study: Study,
    report: Report | None = None,
    *,
    data: Data = None,
    source: str | None = None,
    license: str | None = None,
    pretty_name: str | None = None,
    repo_id: str | None = None,
    language: str | Sequence[str] | None = None,
    task_categories: Sequence[str] = ("text-generation",),
    tags: Sequence[str] = (),
    split: str = "train",
) -> DatasetCard:
    """The dataset card (``huggingface_hub.DatasetCard``) of a study's output.

    Args:
        study: the study that wrote the data.
        report: its report; default ``study.last_report``.
        data: the accepted rows (see :data:`Data`) for the provenance summary; without it
            the summary comes from the report's counts.
        source: a description of the source (a path or Hub id), shown in the card.
        license, language, task_categories, tags: card metadata (``mstudy`` and
            ``synthetic`` are always tagged). Metadata text is put on one line, without
            control characters.
        pretty_name, repo_id: the title, and the id used in the loading snippet.
        split: the split name the data files carry.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    _check_split(split)
    report = report if report is not None else study.last_report
    config = describe_study(study)
    if data is not None:
        summary = provenance_summary(as_dataset(data))
    else:
        if report is None:
            raise ConfigError("dataset_card needs the data or a report (the study has not run)")
        summary = {
            "rows": report.accepted,
            "strategies": {
                name: {"rows": s.accepted, "versions": []} for name, s in report.strategies.items()
            },
            "teachers": {config["teacher"]["fingerprint"]: report.accepted},
            "source_records": report.records,
        }
    title = _one_line(pretty_name or "") or (
        repo_id.split("/")[-1] if repo_id else "Studied dataset"
    )
    languages = [language] if isinstance(language, str) else list(language or [])
    metadata = DatasetCardData(
        license=_one_line(license) if license else None,
        language=[_one_line(x) for x in languages] or None,
        pretty_name=title,
        task_categories=[_one_line(x) for x in task_categories],
        tags=list(dict.fromkeys(t for t in map(_one_line, ["mstudy", "synthetic", *tags]) if t)),
        size_categories=[size_category(summary["rows"])],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*.parquet"}],
            }
        ],
    )
    body = _body(title, config, summary, report, source, repo_id, split)
    content = f"---\n{metadata.to_yaml()}\n---\n\n{body}"
    return DatasetCard(_scrub(content))


def _scrub(text: str, token: str | None = None) -> str:
    """Remove the token and the values of the usual key environment variables from ``text``."""
    secrets = [token] + [os.environ.get(name) for name in SECRET_ENV]
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return text


# -- saving and pushing ----------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_]+", split):
        raise ConfigError(f"split must be letters, digits or '_', got {split!r}")


def save_for_hub(
    data: Data,
    study: Study,
    report: Report | None,
    folder: str | os.PathLike[str],
    *,
    max_shard_rows: int = 500_000,
    **card: Any,
) -> Path:
    """Write exactly what :func:`push_to_hub` uploads into ``folder``; return its path.

    ``data/<split>-NNNNN-of-NNNNN.parquet`` (one file per ``max_shard_rows`` rows),
    ``mstudy.json`` (study configuration and report counts) and ``README.md`` (the card).
    Keyword arguments go to :func:`dataset_card`. Existing data files of the split in
    ``folder`` are replaced.
    """
    if max_shard_rows < 1:
        raise ConfigError(f"max_shard_rows must be >= 1, got {max_shard_rows}")
    split = card.pop("split", "train")
    _check_split(split)
    dataset = as_dataset(data)
    report = report if report is not None else study.last_report
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for old in (folder / "data").glob(f"{split}-*.parquet"):
        old.unlink()
    shards = max(1, math.ceil(dataset.num_rows / max_shard_rows))
    for index in range(shards):
        part = dataset.shard(shards, index, contiguous=True) if shards > 1 else dataset
        part.to_parquet(str(folder / _data_path(split, index, shards)))
    config = describe_study(study)
    info = {"study": config, "report": _report_counts(report)}
    text = _scrub(json.dumps(info, indent=2, ensure_ascii=False, default=str))
    (folder / "mstudy.json").write_text(text + "\n", encoding="utf-8")
    built = dataset_card(study, report, data=dataset, split=split, **card)
    (folder / "README.md").write_text(str(built), encoding="utf-8")
    return folder


def _report_counts(report: Report | None) -> dict[str, Any] | None:
    """The report without its rejection samples (rejected rows stay local)."""
    if report is None:
        return None
    data = report.to_dict()
    data.pop("rejection_samples", None)
    return data


def check_repo_id(repo_id: str) -> None:
    """Raise a ConfigError unless ``repo_id`` is a valid Hub repo id (``owner/name``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(f"invalid Hub repo id {repo_id!r}: {exc}") from None


def push_to_hub(
    data: Data,
    study: Study,
    report: Report | None,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = True,
    commit_message: str | None = None,
    **card: Any,
) -> str:
    """Upload the folder :func:`save_for_hub` writes to the dataset repo ``repo_id``.

    Creates the repo if needed (private unless ``private=False``; an existing repo keeps its
    visibility), uploads ``README.md``, ``mstudy.json`` and the split's parquet files in one
    commit (older parquet files of that split are deleted in it) and returns the commit URL.
    ``token`` defaults to the saved login or ``HF_TOKEN``; it is never logged, and error
    messages are scrubbed of it. Other keyword arguments go to :func:`save_for_hub`. The
    upload needs the Hub, so the offline test suite checks everything up to it: the folder
    (:func:`save_for_hub`), the repo id check and the error on a Hub that cannot be reached.
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    card.setdefault("repo_id", repo_id)
    split = card.get("split", "train")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="mstudy-hub-") as tmp:
        save_for_hub(data, study, report, tmp, **card)
        for name in ("README.md", "mstudy.json"):
            path = Path(tmp) / name
            path.write_text(_scrub(path.read_text(encoding="utf-8"), token), encoding="utf-8")
        log.info("pushing %s to the Hub dataset repo %s", tmp, repo_id)
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=tmp,
                commit_message=commit_message or f"mstudy {__version__}: studied dataset",
                delete_patterns=[f"data/{split}-*.parquet"],
            )
        except Exception as exc:
            raise SinkError(
                f"cannot push to the Hub dataset repo {repo_id}: "
                f"{_scrub(f'{type(exc).__name__}: {exc}', token)}"
            ) from None
    return str(info.commit_url)
