"""Study configs in TOML: one file names the source, teacher, strategies, filters and sinks.

::

    [source]
    path = "facts.jsonl"          # relative paths resolve against this file's folder
    id_field = "id"               # optional
    limit = 100                   # optional
    # kind = "documents"          # a file or folder of .txt/.md/.html/.pdf, chunked; then also
    # max_tokens = 512, overlap = 64, tokenizer = "teacher", suffixes = [".md"], max_bytes

    [teacher]
    name = "scripted"             # a teacher plugin name, or "dist:name"
    reply = "..."                 # every other key is a parameter of the plugin

    [[strategies]]
    name = "reverse"
    n = 2
    fields = { text = "fact", subject = "subject", object = "object" }
    params = { temperature = 0.7, max_new_tokens = 64 }

    [[filters]]
    name = "length"
    min_chars = 10

    [[sinks]]
    name = "jsonl"
    path = "out/enriched.jsonl"

    [rejects]                     # optional; any sink
    name = "jsonl"
    path = "out/rejects.jsonl"

    [run]                         # optional
    progress = true
    cache = "calls.sqlite"        # a call cache shared across runs (default: none)
    journal = true                # resumable (default); a path, or false to turn it off
    checkpoint_every = 2.0        # seconds between journal checkpoints
    max_tokens = 1_000_000        # budget: stop cleanly (resumable) once this many are spent
    max_cost = 5.0                # ... or this much money, with prices per 1M tokens:
    price_in = 0.5
    price_out = 1.5

    [hub]                         # optional: publish after a completed run
    repo_id = "me/facts-studied"  # push to this Hub dataset repo (private unless private = false)
    folder = "out/hub"            # ... and/or write the folder that is uploaded
    license = "cc-by-4.0"         # card metadata: license, pretty_name, split, tags,
    tags = ["facts"]              # language, task_categories

A component may also be given by name alone (``teacher = "scripted"``,
``strategies = ["reverse", "paraphrase"]``). Parameters named ``path`` or ``dir``, or ending
in ``_path`` or ``_dir``, resolve against the config file's folder. Every error is a
:class:`~mstudy.errors.ConfigError` that starts with ``file:line:`` and carries them as
``.path`` and ``.line``, with the key at fault as ``.parameter``. Values are checked against
the types a plugin declares for its parameters, and templates (``template``, ``system``,
``prefill``, ``*_template``) are compiled, when the config is loaded. ``[hub]`` publishes the
rows of the first ``jsonl`` or ``parquet`` sink (:meth:`StudyConfig.hub_settings`); it never
takes a token (``HF_TOKEN`` or ``hf auth login`` provide one).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import inspect
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mstudy import plugins
from mstudy.budget import Budget
from mstudy.errors import ConfigError, PluginError, PluginLoadError, TemplateError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    from mstudy.chain import Chain
    from mstudy.documents import Documents
    from mstudy.interfaces import Filter, Sink, Strategy, Teacher
    from mstudy.study import Study

SECTIONS = (
    "source",
    "teacher",
    "strategies",
    "filters",
    "sinks",
    "rejects",
    "run",
    "hub",
    "ray",
    "stages",
)
"""The top-level sections a study config may have."""
SOURCE_KEYS = ("kind", "path", "id_field", "limit")
SOURCE_KINDS = ("records", "documents")
"""``[source] kind``: ``records`` (JSONL, Parquet, a saved dataset; the default) or
``documents`` (a file or folder of .txt/.md/.html/.pdf, chunked: :class:`mstudy.Documents`)."""
DOCUMENT_KEYS = ("max_tokens", "overlap", "tokenizer", "suffixes", "max_bytes")
"""The ``[source]`` keys of ``kind = "documents"`` (the parameters of :class:`mstudy.Documents`)."""
STAGE_KEYS = ("name", "teacher", "strategies", "filters", "sinks", "rejects")
"""The keys of a ``[[stages]]`` table (:mod:`mstudy.chain`)."""
ROUND_KEYS = ("rounds", "schedule")
"""Strategy-table keys taken by the config: the strategy is asked in rounds
(:class:`~mstudy.rounds.Rounds`)."""
RAY_KEYS = (
    "replicas",
    "num_cpus",
    "num_gpus",
    "batch_size",
    "in_flight",
    "address",
    "max_restarts",
    "max_resubmits",
    "runtime_env",
    "parse_in_actors",
)
"""The keys of ``[ray]``: :class:`~mstudy.teachers.ray_pool.RayTeacher`'s parameters."""

RUN_KEYS = (
    "progress",
    "cache",
    "journal",
    "checkpoint_every",
    "max_tokens",
    "max_cost",
    "price_in",
    "price_out",
)
HUB_KEYS = (
    "repo_id",
    "private",
    "folder",
    "license",
    "pretty_name",
    "split",
    "tags",
    "language",
    "task_categories",
)
_HUB_STRINGS = ("license", "pretty_name", "split")
_HUB_LISTS = ("tags", "language", "task_categories")
_SECRET_KEY = re.compile(r"(?:^|[_-])(?:token|api[_-]?key|secret|passw(?:or)?d)$", re.I)
PUBLISHED_SINKS = ("jsonl", "parquet")
"""The sinks whose file ``[hub]`` publishes (the first of them with a ``path``)."""

Place = tuple[str | None, int | None]
"""A file (or other label) and a 1-based line in it, each None when not known."""
Where = Callable[[str | None], Place]
"""Gives the place of a key of a component table (None: the table itself)."""
TEMPLATE_KEYS = ("template", "system", "prefill")
"""Strategy parameters that are templates (and any ending in ``_template``)."""


# -- locating lines ---------------------------------------------------------------------------

_KEY = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')"""
_NAME = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_ARRAY_HEADER = re.compile(rf"^\s*\[\[\s*({_NAME})\s*\]\]\s*(?:#.*)?$")  # [[name]]
_TABLE_HEADER = re.compile(rf"^\s*\[\s*({_NAME})\s*\]\s*(?:#.*)?$")  # [name]
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _toml_error_place(exc: tomllib.TOMLDecodeError) -> tuple[int | None, int | None, str]:
    """(line, column, message without the position) of a TOML syntax error.

    ``tomllib`` gives ``lineno``/``colno``/``msg`` attributes from Python 3.14 (``tomli``
    from 2.1); before that (3.10-3.13) the position exists only in the message's tail, "(at
    line L, column C)", and this is the one place that reads it from there.
    """
    lineno, colno, msg = (getattr(exc, a, None) for a in ("lineno", "colno", "msg"))
    if isinstance(lineno, int) and isinstance(colno, int) and isinstance(msg, str):
        return lineno, colno, msg
    message = str(exc)
    match = _TOML_POSITION.search(message)
    if match is None:
        return None, None, message
    return int(match.group(1)), int(match.group(2)), message[: match.start()]


def _dotted(name: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in name.split("."))


class _Locator:
    """Finds the line of a section, of the Nth ``[[array]]`` table and of a key in them.

    A plain line scanner, not a TOML parser: enough to point an error at its line.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str]] = []  # (0-based line, dotted name)
        for i, line in enumerate(self.lines):
            match = _ARRAY_HEADER.match(line) or _TABLE_HEADER.match(line)
            if match:
                self.headers.append((i, _dotted(match.group(1))))

    def _key_in(self, start: int, stop: int, key: str) -> int | None:
        pattern = re.compile(
            rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*[.=]"""
        )
        for i in range(start, stop):
            if pattern.match(self.lines[i]):
                return i
        return None

    def line(self, section: str, index: int | None = None, key: str | None = None) -> int | None:
        """1-based line of ``key`` in ``section`` (its ``index``-th table), or of the table."""
        ends = [h[0] for h in self.headers] + [len(self.lines)]
        count = -1
        for n, (start, name) in enumerate(self.headers):
            if name != section:
                continue
            count += 1  # [[section]] tables in order; a lone [section] is table 0
            if index is not None and count != index:
                continue
            # the table runs to the next header that is not one of its own sub-tables
            stop = len(self.lines)
            for later, later_name in self.headers[n + 1 :]:
                if not later_name.startswith(f"{section}."):
                    stop = later
                    break
            if key is not None:
                found = self._key_in(start + 1, ends[n + 1], key)
                if found is None:
                    for sub, sub_name in self.headers[n + 1 :]:
                        if sub >= stop:
                            break
                        if sub_name == f"{section}.{key}" or sub_name.startswith(
                            f"{section}.{key}."
                        ):
                            found = sub
                            break
                if found is not None:
                    return found + 1
            return start + 1
        # not a table of its own: ``section = ...`` or ``section.key = ...`` at the top level
        found = self._key_in(0, ends[0], section)
        return None if found is None else found + 1


# -- the config -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubSettings:
    """What to publish after a completed run: ``[hub]`` with the command line's overrides."""

    data: Path
    """The rows: the file of the first ``jsonl`` or ``parquet`` sink with a path."""
    repo_id: str | None = None
    """The Hub dataset repo to push to (None: no push)."""
    folder: Path | None = None
    """Where to write the folder that is uploaded (None: not written)."""
    private: bool = True
    """The visibility of a repo the push creates (an existing repo keeps its own)."""
    card: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of :func:`mstudy.hub.save_for_hub` (card metadata, ``source``)."""


@dataclass
class StudyConfig:
    """A parsed study config: each component is a table with ``name`` and its parameters."""

    path: Path
    source: dict[str, Any]
    teacher: dict[str, Any]
    strategies: list[dict[str, Any]]
    filters: list[dict[str, Any]] = field(default_factory=list)
    sinks: list[dict[str, Any]] = field(default_factory=list)
    rejects: dict[str, Any] | None = None
    run: dict[str, Any] = field(default_factory=dict)
    text: str = field(default="", repr=False)
    hub: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] = field(default_factory=dict)
    """Settings of the Ray teacher pool (``replicas``, ``num_gpus``, ...), used by
    ``mstudy run --ray``."""
    stages: list[dict[str, Any]] = field(default_factory=list)
    """``[[stages]]``: each a table with ``strategies`` and optional ``name``, ``teacher``,
    ``filters``, ``sinks`` and ``rejects`` (the top-level ``[[sinks]]`` and ``[rejects]``
    are then the chain's)."""

    @property
    def is_chain(self) -> bool:
        """Whether this config describes chained stages (:meth:`build_chain`)."""
        return bool(self.stages)

    @property
    def base_dir(self) -> Path:
        """The folder relative paths resolve against: the config file's."""
        return self.path.parent

    @property
    def source_path(self) -> str:
        """The source's path, resolved against :attr:`base_dir`."""
        return resolve_path(self.source["path"], self.base_dir)

    @property
    def limit(self) -> int | None:
        limit = self.source.get("limit")
        return None if limit is None else int(limit)

    @property
    def id_field(self) -> str:
        return str(self.source.get("id_field", "id"))

    @property
    def progress(self) -> bool | None:
        progress = self.run.get("progress")
        return None if progress is None else bool(progress)

    def budget(self) -> Budget | None:
        """The ``[run]`` budget and prices, if any are set (their values are checked at load)."""
        keys = ("max_tokens", "max_cost", "price_in", "price_out")
        if not any(k in self.run for k in keys):
            return None
        return Budget(**{k: self.run[k] for k in keys if k in self.run})

    def journal_dir(self, sinks: Sequence[object]) -> Path | None:
        """Where the run journal goes: ``[run] journal``, by default beside the first output."""
        setting = self.run.get("journal", True)
        if setting is False:
            return None
        if isinstance(setting, str):
            return Path(resolve_path(setting, self.base_dir))
        first = next((getattr(s, "path", None) for s in sinks if hasattr(s, "path")), None)
        folder = Path(first).parent if first is not None else self.base_dir
        return folder / f".{self.path.stem}.journal"

    def hub_settings(
        self, *, repo_id: str | None = None, folder: str | Path | None = None
    ) -> HubSettings | None:
        """What to publish after a completed run, or None when nothing is asked for.

        ``repo_id`` and ``folder`` override ``[hub] repo_id`` and ``[hub] folder`` (an
        override folder is taken as given, ``[hub] folder`` resolves against
        :attr:`base_dir`). Everything is checked here, before anything runs: the repo id,
        the sink whose rows are published, and that ``datasets`` and ``pyarrow`` are installed.
        """
        if repo_id is not None:
            _check_repo_id(repo_id, (None, None))
        else:
            repo_id = self.hub.get("repo_id")
        if folder is None and "folder" in self.hub:
            folder = resolve_path(self.hub["folder"], self.base_dir)
        if repo_id is None and folder is None:
            return None
        asked = [k for k in ("repo_id", "folder") if k in self.hub]
        key = asked[0] if asked else None
        place = self.where("hub")(key) if self.hub else (str(self.path), None)
        data = self._published_data()
        if data is None:
            raise _error(
                f"publishing uploads the rows of the first {' or '.join(PUBLISHED_SINKS)} "
                "sink, and [[sinks]] has none with a path; "
                'add one, e.g. [[sinks]] name = "jsonl", path = "out/rows.jsonl"',
                place,
                key,
            )
        for module in ("datasets", "pyarrow"):
            if importlib.util.find_spec(module) is None:
                raise _error(
                    f"publishing on the Hub needs the {module!r} package, which is not "
                    'installed; install it with: pip install "mstudy[datasets]"',
                    place,
                    key,
                )
        card = {k: self.hub[k] for k in (*_HUB_STRINGS, *_HUB_LISTS) if k in self.hub}
        card["source"] = str(self.source["path"])
        return HubSettings(
            data=data,
            repo_id=repo_id,
            folder=None if folder is None else Path(folder),
            private=bool(self.hub.get("private", True)),
            card=card,
        )

    def _published_data(self) -> Path | None:
        for table in self.sinks:
            name = str(table.get("name", ""))
            dist, _, plugin = name.rpartition(":")
            if plugin in PUBLISHED_SINKS and dist in ("", "mstudy"):
                path = table.get("path")
                if isinstance(path, str) and path.strip():
                    return Path(resolve_path(path, self.base_dir))
        return None

    def where(self, section: str, index: int | None = None) -> Where:
        """A :data:`Where` for a section (and the ``index``-th table of an array section)."""
        locator = _Locator(self.text)

        def at(key: str | None) -> Place:
            return str(self.path), locator.line(section, index, key)

        return at

    def check_source(self) -> None:
        """Raise a ConfigError naming ``[source] path`` when it names nothing on disk.

        Called before anything is built, so a run that cannot read its source leaves
        nothing behind (no journal folder, no empty outputs). URLs are not checked.
        """
        value = self.source_path
        if "://" in value or Path(value).exists():
            return
        raise _error(f"source file not found: {value}", self.where("source")("path"), "path")

    def check_names(self) -> None:
        """Raise a ConfigError at the first component whose plugin is not installed (no import)."""
        for kind, table, where in self._jobs():
            _lookup(kind, table, where)

    def check_components(self) -> None:
        """Check names, then each component's parameter names and value types; build nothing.

        Imports the plugins' modules but creates no object, so nothing is written anywhere.
        """
        self.check_names()
        for kind, table, where in self._jobs():
            build_component(kind, table, where, base_dir=self.base_dir, create=False)

    def _jobs(self) -> list[tuple[str, Mapping[str, Any], Where]]:
        jobs: list[tuple[str, Mapping[str, Any], Where]] = []
        for stage in self._stage_tables():
            jobs.extend(stage["jobs"])
        jobs += [
            *(
                ("strategies", _without_rounds(t), self.where("strategies", i))
                for i, t in enumerate(self.strategies)
            ),
            *(("filters", t, self.where("filters", i)) for i, t in enumerate(self.filters)),
            ("teachers", self.teacher, self.where("teacher")),
            *(("sinks", t, self.where("sinks", i)) for i, t in enumerate(self.sinks)),
        ]
        if self.rejects is not None:
            jobs.append(("sinks", self.rejects, self.where("rejects")))
        return jobs

    def _stage_tables(self) -> list[dict[str, Any]]:
        """Each stage's components as jobs (kind, table, where), counted across stages for
        the line locator (``[[stages.strategies]]`` tables are numbered file-wide)."""
        out = []
        counts: dict[str, int] = {}
        for i, stage in enumerate(self.stages):
            jobs: list[tuple[str, Mapping[str, Any], Where]] = []
            for key, kind in (("strategies", "strategies"), ("filters", "filters")):
                for table in stage.get(key, []):
                    n = counts[key] = counts.get(key, -1) + 1
                    table = _without_rounds(table) if key == "strategies" else table
                    jobs.append((kind, table, self.where(f"stages.{key}", n)))
            if stage.get("teacher") is not None:
                n = counts["teacher"] = counts.get("teacher", -1) + 1
                jobs.append(("teachers", stage["teacher"], self.where("stages.teacher", n)))
            for table in stage.get("sinks", []):
                n = counts["sinks"] = counts.get("sinks", -1) + 1
                jobs.append(("sinks", table, self.where("stages.sinks", n)))
            if stage.get("rejects") is not None:
                n = counts["rejects"] = counts.get("rejects", -1) + 1
                jobs.append(("sinks", stage["rejects"], self.where("stages.rejects", n)))
            out.append({"index": i, "stage": stage, "jobs": jobs})
        return out

    def build_chain(
        self, *, progress: bool | None = None, ray_address: str | None = None, ray: bool = False
    ) -> tuple[Chain, str | Documents]:
        """Build the :class:`~mstudy.chain.Chain` that ``[[stages]]`` describe, and its source.

        Stages without a ``teacher`` share the top-level one; ``[[sinks]]`` and ``[rejects]``
        are the chain's (the last stage's rows; every stage's rejections), a stage's own
        ``sinks`` keep its rows. ``[run]`` cache, budget (per stage) and journal apply.
        """
        from mstudy.chain import Chain
        from mstudy.study import Study

        if not self.stages:
            raise ConfigError("this config has no [[stages]]", path=str(self.path))
        self.check_names()
        built: list[object] = []

        def make(kind: str, table: Mapping[str, Any], where: Where) -> Any:
            obj = build_component(kind, table, where, base_dir=self.base_dir)
            if kind == "sinks":
                built.append(obj)
            return obj

        try:
            teacher: Any = (
                self._ray_teacher(ray_address)
                if ray
                else make("teachers", self.teacher, self.where("teacher"))
            )
            studies = []
            for entry in self._stage_tables():
                stage, jobs = entry["stage"], entry["jobs"]
                made = [make(kind, table, where) for kind, table, where in jobs]
                n_s, n_f = len(stage.get("strategies", [])), len(stage.get("filters", []))
                strategies = [
                    cast("Strategy", _with_rounds(obj, table))
                    for obj, table in zip(made[:n_s], stage.get("strategies", []), strict=True)
                ]
                rest = made[n_s + n_f :]
                stage_teacher = rest.pop(0) if stage.get("teacher") is not None else teacher
                stage_rejects = rest.pop() if stage.get("rejects") is not None else None
                studies.append(
                    Study(
                        stage_teacher,
                        strategies,
                        made[n_s : n_s + n_f],
                        rest,
                        stage_rejects,
                        id_field=self.id_field,
                        progress=self.progress if progress is None else progress,
                        checkpoint_every=float(self.run.get("checkpoint_every", 2.0)),
                        budget=self.budget(),
                        name=stage.get("name"),
                    )
                )
            sinks = [make("sinks", t, self.where("sinks", i)) for i, t in enumerate(self.sinks)]
            rejects = (
                make("sinks", self.rejects, self.where("rejects"))
                if self.rejects is not None
                else None
            )
            chain = Chain(
                studies,
                sinks=sinks,
                rejects=rejects,
                journal=self.journal_dir([*sinks, *([rejects] if rejects else [])]),
                cache=(
                    Path(resolve_path(self.run["cache"], self.base_dir))
                    if "cache" in self.run
                    else None
                ),
            )
        except ConfigError as exc:
            _abort_sinks(built)
            if exc.path is not None:
                raise
            raise exc.located(str(self.path), None) from exc
        except (PluginError, ValueError, TypeError) as exc:
            _abort_sinks(built)
            raise ConfigError(str(exc), path=str(self.path)) from exc
        except BaseException:
            _abort_sinks(built)
            raise
        if self.source.get("kind", "records") == "documents":
            return chain, self._documents(teacher)
        return chain, self.source_path

    def build(
        self, *, progress: bool | None = None, ray_address: str | None = None, ray: bool = False
    ) -> tuple[Study, str | Documents]:
        """Build every component and the :class:`~mstudy.study.Study`; returns it and the source
        (the path, or a :class:`~mstudy.documents.Documents` for ``kind = "documents"``).

        All names are looked up first (no import), so a misspelt one is reported before a
        teacher model loads. ``progress`` overrides ``[run] progress``. With ``ray``, the
        teacher is a :class:`~mstudy.teachers.ray_pool.RayTeacher` pool set by ``[ray]``
        (joining ``ray_address``, else ``[ray] address``), whose actors each build the
        ``[teacher]``.
        """
        from mstudy.study import Study

        if self.stages:
            raise ConfigError(
                "this config has [[stages]]: build it with build_chain()", path=str(self.path)
            )
        jobs = self._jobs()
        self.check_names()
        built: list[object] = []
        try:
            for kind, table, where in jobs:
                if kind == "teachers" and ray:
                    built.append(self._ray_teacher(ray_address))
                    continue
                built.append(build_component(kind, table, where, base_dir=self.base_dir))
            n_strategies, n_filters = len(self.strategies), len(self.filters)
            strategies = [
                cast("Strategy", _with_rounds(obj, table))
                for obj, table in zip(built[:n_strategies], self.strategies, strict=True)
            ]
            filters = cast("list[Filter]", built[n_strategies : n_strategies + n_filters])
            teacher = cast("Teacher", built[n_strategies + n_filters])
            sinks = cast("list[Sink]", built[n_strategies + n_filters + 1 :])
            rejects = sinks.pop() if self.rejects is not None else None
            try:
                study = Study(
                    teacher,
                    strategies,
                    filters,
                    sinks,
                    rejects,
                    id_field=self.id_field,
                    progress=self.progress if progress is None else progress,
                    cache=(
                        Path(resolve_path(self.run["cache"], self.base_dir))
                        if "cache" in self.run
                        else None
                    ),
                    journal=self.journal_dir([*sinks, *([rejects] if rejects else [])]),
                    checkpoint_every=float(self.run.get("checkpoint_every", 2.0)),
                    budget=self.budget(),
                )
            except ConfigError as exc:
                if exc.path is not None:
                    raise
                raise exc.located(str(self.path), None) from exc
            except (PluginError, ValueError, TypeError) as exc:
                raise ConfigError(str(exc), path=str(self.path)) from exc
        except BaseException:
            _abort_sinks(built[len(self.strategies) + len(self.filters) + 1 :])
            raise
        if self.source.get("kind", "records") == "documents":
            return study, self._documents(teacher)
        return study, self.source_path

    def _documents(self, teacher: Teacher) -> Documents:
        """The ``kind = "documents"`` source; ``tokenizer`` is ``"teacher"`` (the default: the
        teacher's tokenizer when it has one, else the approximation), ``"approximate"``, or a
        tokenizer name or folder."""
        from mstudy.documents import Documents
        from mstudy.interfaces import TokenCounter

        where = self.where("source")
        setting = self.source.get("tokenizer")
        tokenizer: object = None
        if setting in (None, "teacher"):
            if isinstance(teacher, TokenCounter):
                tokenizer = teacher
            elif setting == "teacher":
                raise _error(
                    f'tokenizer = "teacher": the {teacher.name!r} teacher has no tokenizer '
                    '(it does not count tokens); name one, or use "approximate"',
                    where("tokenizer"),
                    "tokenizer",
                )
        elif setting != "approximate":
            local = Path(resolve_path(setting, self.base_dir))
            tokenizer = str(local) if local.exists() else setting
        options = {
            k: self.source[k] for k in DOCUMENT_KEYS if k in self.source and k != "tokenizer"
        }
        try:
            return Documents(self.source_path, tokenizer=tokenizer, **options)
        except ConfigError as exc:
            key = exc.parameter if exc.parameter in self.source else None
            raise exc.located(*where(key), parameter=key) from exc

    def _ray_teacher(self, address: str | None) -> object:
        """The ``[teacher]`` as a Ray actor pool; each actor builds it from the table."""
        from mstudy.teachers.ray_pool import RayTeacher

        factory = functools.partial(
            build_component,
            "teachers",
            dict(self.teacher),
            f"{self.path} [teacher]",
            base_dir=self.base_dir,
        )
        settings = dict(self.ray)
        if address is not None:
            settings["address"] = address
        return RayTeacher(factory, **settings)


def _without_rounds(table: Mapping[str, Any]) -> dict[str, Any]:
    """A strategy table without the keys :data:`ROUND_KEYS` (the plugin's own parameters)."""
    return {k: v for k, v in table.items() if k not in ROUND_KEYS}


def _with_rounds(strategy: object, table: Mapping[str, Any]) -> object:
    """``strategy`` wrapped in :class:`~mstudy.rounds.Rounds` when its table asks for rounds."""
    if not any(k in table for k in ROUND_KEYS):
        return strategy
    from mstudy.rounds import Rounds

    return Rounds(
        cast("Strategy", strategy),
        rounds=table.get("rounds", 1),
        schedule=table.get("schedule", ()),
    )


def _error(message: str, place: Place, parameter: str | None = None) -> ConfigError:
    path, line = place
    return ConfigError(message, parameter=parameter, path=path, line=line)


def _check_repo_id(repo_id: str, place: Place, parameter: str | None = None) -> None:
    from mstudy.hub import check_repo_id

    try:
        check_repo_id(repo_id)
    except ConfigError as exc:
        raise exc.located(*place, parameter=parameter) from None


def _abort_sinks(sinks: list[object]) -> None:
    """Leave nothing behind for sinks built before a later component failed."""
    for sink in sinks:
        abort = getattr(sink, "abort", None)
        if callable(abort):
            with contextlib.suppress(Exception):  # the original error matters more
                abort()


def resolve_path(value: str, base_dir: Path) -> str:
    """``value`` made absolute against ``base_dir`` (``~`` expanded; URLs left alone)."""
    if "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def _is_path_key(key: str) -> bool:
    return key in ("path", "dir") or key.endswith(("_path", "_dir"))


def _is_template_key(key: str) -> bool:
    return key in TEMPLATE_KEYS or key.endswith("_template")


def _split(kind: str, table: Mapping[str, Any], where: Where) -> tuple[str, dict[str, Any]]:
    singular = plugins.singular(kind)
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        got = "none" if name is None else repr(name)
        raise _error(f"a {singular} needs a 'name' (a plugin name), got {got}", where("name"))
    return name.strip(), {k: v for k, v in table.items() if k != "name"}


def _lookup(kind: str, table: Mapping[str, Any], where: Where) -> None:
    """Check that the component's plugin is installed, without importing it."""
    name, _ = _split(kind, table, where)
    try:
        plugins.find(kind, name)
    except PluginError as exc:
        raise _error(str(exc), where("name")) from exc


def _check_types(kind: str, name: str, params: Mapping[str, Any]) -> object | None:
    """Raise a ConfigError naming the first parameter whose value its declared type rules out.

    Returns the plugin's class or factory (None for a ready-made instance).
    """
    from mstudy._typecheck import mismatch, parameter_types

    obj = plugins.load(kind, name)
    if not (inspect.isclass(obj) or inspect.isroutine(obj)):
        return None  # a ready-made instance: plugins.create refuses parameters for it
    declared = parameter_types(obj)
    for key, value in params.items():
        if key in declared:
            expected = mismatch(value, declared[key])
            if expected is not None:
                raise ConfigError(
                    f"{plugins.singular(kind)} {name!r}: {key} must be {expected}, "
                    f"got {type(value).__name__} {value!r}",
                    parameter=key,
                )
    return obj


def _check_templates(table: Mapping[str, Any], where: Where) -> None:
    """Compile every template a strategy table sets, so a syntax error stops the load."""
    from mstudy._templates import compile_template

    for key, value in table.items():
        if _is_template_key(key) and isinstance(value, str):
            try:
                compile_template(value)
            except TemplateError as exc:
                raise _error(f"{key}: {exc}", where(key), key) from exc


def build_component(
    kind: str,
    table: Mapping[str, Any],
    where: Where | str = "",
    *,
    base_dir: Path | None = None,
    create: bool = True,
) -> object:
    """Create the plugin a config table describes: ``name`` plus the plugin's parameters.

    ``where`` says where the table is, for messages: a ``file:line`` label or a
    :data:`Where`. Path parameters resolve against ``base_dir`` when it is given. Values
    are checked against the plugin's declared parameter types first; a ConfigError's
    ``parameter`` names the key at fault (the table's key, also for a key inside a table
    value such as ``params``). With ``create=False`` only the checks run (None is returned).
    """

    def locate(key: str | None) -> Place:
        if callable(where):
            return where(key)
        return (where or None), None

    name, params = _split(kind, table, locate)
    if base_dir is not None:
        params = {
            k: resolve_path(v, base_dir) if _is_path_key(k) and isinstance(v, str) else v
            for k, v in params.items()
        }
    try:
        obj = _check_types(kind, name, params)
        if not create:
            if obj is not None:
                plugins.check_params(f"{plugins.singular(kind)} {name!r}", obj, params)
            return None
        return plugins.create(kind, name, **params)
    except PluginLoadError as exc:
        path, line = locate("name")
        prefix = ":".join(str(p) for p in (path, line) if p is not None)
        raise PluginLoadError(f"{prefix}: {exc}" if prefix else str(exc)) from exc
    except PluginError as exc:
        raise _error(str(exc), locate("name")) from exc
    except ConfigError as exc:  # a value the plugin refused: point at the key it names
        if exc.path is not None:
            raise
        key = _table_key(params, exc.parameter)
        raise exc.located(*locate(key if key is not None else "name"), parameter=key) from exc


def _table_key(params: Mapping[str, Any], parameter: str | None) -> str | None:
    """The table key of ``parameter``: itself, or the table-valued key that holds it."""
    if parameter is None or parameter in params:
        return parameter
    for key, value in params.items():
        if isinstance(value, Mapping) and parameter in value:
            return key
    return None


# -- parsing ----------------------------------------------------------------------------------


def _components(
    data: Mapping[str, Any], section: str, locator: _Locator, path: Path
) -> list[dict[str, Any]]:
    raw = data.get(section, [])
    if isinstance(raw, (str, Mapping)):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError(
            f"'{section}' must be an array of tables ([[{section}]]) or of names",
            parameter=section,
            path=str(path),
            line=locator.line(section),
        )
    out = []
    for i, item in enumerate(raw):
        out.append(_component(item, section, i, locator, path))
    return out


def _component(
    item: Any, section: str, index: int | None, locator: _Locator, path: Path
) -> dict[str, Any]:
    if isinstance(item, str):
        if section in ("sinks", "rejects") and item.endswith((".jsonl", ".parquet")):
            return {"name": item.rpartition(".")[2], "path": item}  # a file path
        return {"name": item}
    if isinstance(item, Mapping):
        return dict(item)
    raise ConfigError(
        f"'{section}' entries must be tables with a 'name' or plugin names, "
        f"got {type(item).__name__}",
        parameter=section,
        path=str(path),
        line=locator.line(section, index),
    )


def _check_keys(
    table: Mapping[str, Any], accepted: tuple[str, ...], section: str, locator: _Locator, path: Path
) -> None:
    for key in table:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown key {key!r} in [{section}]{hint}; accepted: {', '.join(accepted)}",
                parameter=key,
                path=str(path),
                line=locator.line(section, None, key),
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_run(run: Mapping[str, Any], locator: _Locator, path: Path) -> None:
    """The ``[run]`` table's values: types, and finite non-negative numbers."""

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(
            f"{key} {message}, got {run[key]!r}",
            parameter=key,
            path=str(path),
            line=locator.line("run", None, key),
        )

    if "progress" in run and not isinstance(run["progress"], bool):
        raise fail("progress", "must be true or false")
    if "journal" in run and not isinstance(run["journal"], (bool, str)):
        raise fail("journal", "must be true, false or a path")
    if "cache" in run and not isinstance(run["cache"], str):
        raise fail("cache", "must be a path")
    every = run.get("checkpoint_every", 2.0)
    if not _is_number(every) or not math.isfinite(every) or every < 0:
        raise fail("checkpoint_every", "must be a finite number of seconds >= 0")
    tokens = run.get("max_tokens", 1)
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        raise fail("max_tokens", "must be a positive integer")
    for key in ("max_cost", "price_in", "price_out"):
        value = run.get(key, 0.0)
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise fail(key, "must be a finite number >= 0")
    if "max_cost" in run and not (run.get("price_in") or run.get("price_out")):
        raise fail("max_cost", "needs prices: price_in and/or price_out per 1M tokens")


def parse_config(text: str, path: str | Path = "study.toml") -> StudyConfig:
    """Parse the text of a study config; ``path`` names it in errors and anchors relative paths.

    Checks everything that needs no plugin import: sections and keys, ``[source]``,
    ``[run]`` and ``[hub]`` values, and the templates strategies are given.
    """
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, column, reason = _toml_error_place(exc)
        raise ConfigError(
            f"invalid TOML: {reason}", path=str(path), line=line, column=column
        ) from exc
    locator = _Locator(text)

    def fail(message: str, line: int | None, parameter: str | None = None) -> ConfigError:
        return ConfigError(message, parameter=parameter, path=str(path), line=line)

    unknown = [key for key in data if key not in SECTIONS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, SECTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise fail(
            f"unknown section {key!r}{hint}; accepted: {', '.join(SECTIONS)}",
            locator.line(key) or 1,
            key,
        )
    for required, example in (
        ("source", '[source]\npath = "data.jsonl"'),
        ("teacher", '[teacher]\nname = "scripted"'),
        ("strategies", '[[strategies]]\nname = "reverse"'),
    ):
        if required == "strategies" and "stages" in data:
            if data.get("strategies"):
                raise fail(
                    "a config has either [[strategies]] (one study) or [[stages]] (a chain), "
                    "not both",
                    locator.line("strategies"),
                    "strategies",
                )
            continue
        if not data.get(required):
            inside = [k for k, v in data.items() if isinstance(v, Mapping) and required in v]
            if inside:  # `strategies = [...]` written below [teacher] lands in the teacher
                raise fail(
                    f"'{required}' is inside [{inside[0]}]; top-level keys must come before "
                    "the first [table]",
                    locator.line(inside[0], None, required),
                    required,
                )
            raise fail(f"missing [{required}] section, e.g.:\n{example}", None, required)

    source = data["source"]
    if isinstance(source, str):
        source = {"path": source}
    if not isinstance(source, Mapping):
        raise fail("[source] must be a table", locator.line("source"), "source")
    source = dict(source)
    kind = source.get("kind", "records")
    if kind not in SOURCE_KINDS:
        raise fail(
            f"[source] kind must be one of {', '.join(map(repr, SOURCE_KINDS))}, got {kind!r}",
            locator.line("source", None, "kind"),
            "kind",
        )
    accepted = SOURCE_KEYS + (DOCUMENT_KEYS if kind == "documents" else ())
    _check_keys(source, accepted, "source", locator, path)
    if not isinstance(source.get("path"), str) or not source["path"].strip():
        raise fail(
            "[source] needs a 'path' string ("
            + (
                "a file or folder of documents"
                if kind == "documents"
                else "a JSONL or Parquet file"
            )
            + ")",
            locator.line("source", None, "path"),
            "path",
        )
    if kind == "documents":
        _check_documents(source, lambda key: locator.line("source", None, key), path)
    limit = source.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise fail(
            f"limit must be a positive integer, got {limit!r}",
            locator.line("source", None, "limit"),
            "limit",
        )
    if "id_field" in source and not isinstance(source["id_field"], str):
        raise fail(
            f"id_field must be a string, got {source['id_field']!r}",
            locator.line("source", None, "id_field"),
            "id_field",
        )

    run = data.get("run", {})
    if not isinstance(run, Mapping):
        raise fail("[run] must be a table", locator.line("run"), "run")
    _check_keys(run, RUN_KEYS, "run", locator, path)
    _check_run(run, locator, path)

    hub = _parse_hub(data.get("hub", {}), locator, path)
    ray = data.get("ray", {})
    if not isinstance(ray, Mapping):
        raise fail("[ray] must be a table", locator.line("ray"), "ray")
    _check_keys(ray, RAY_KEYS, "ray", locator, path)
    teacher = _component(data["teacher"], "teacher", None, locator, path)
    rejects = data.get("rejects")
    config = StudyConfig(
        path=path,
        source=source,
        teacher=teacher,
        strategies=_components(data, "strategies", locator, path),
        filters=_components(data, "filters", locator, path),
        sinks=_components(data, "sinks", locator, path),
        rejects=None if rejects is None else _component(rejects, "rejects", None, locator, path),
        run=dict(run),
        text=text,
        hub=hub,
        ray=dict(ray),
    )
    config.stages = _parse_stages(data.get("stages", []), locator, path)
    for i, table in enumerate(config.strategies):
        _check_templates(table, config.where("strategies", i))
    n = 0
    for stage in config.stages:
        for table in stage["strategies"]:
            _check_templates(table, config.where("stages.strategies", n))
            n += 1
    if config.stages and config.hub:
        raise fail(
            "[hub] publishes a single study's rows; a chain ([[stages]]) is not published yet",
            locator.line("hub"),
            "hub",
        )
    config.hub_settings()  # a [hub] that publishes has something to publish
    return config


def _parse_stages(raw: Any, locator: _Locator, path: Path) -> list[dict[str, Any]]:
    """The checked ``[[stages]]`` tables: known keys, at least one strategy each."""
    if not isinstance(raw, list) or not all(isinstance(t, Mapping) for t in raw):
        raise ConfigError(
            "'stages' must be an array of tables ([[stages]])",
            parameter="stages",
            path=str(path),
            line=locator.line("stages"),
        )
    stages = []
    for i, table in enumerate(raw):
        for key in table:
            if key not in STAGE_KEYS:
                close = difflib.get_close_matches(key, STAGE_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"unknown key {key!r} in [[stages]] #{i + 1}{hint}; "
                    f"accepted: {', '.join(STAGE_KEYS)}",
                    parameter=key,
                    path=str(path),
                    line=locator.line("stages", i, key),
                )
        name = table.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(
                f"a stage's name must be a non-empty string, got {name!r}",
                parameter="name",
                path=str(path),
                line=locator.line("stages", i, "name"),
            )
        stage: dict[str, Any] = {
            "name": name,
            "strategies": _components(table, "strategies", locator, path),
            "filters": _components(table, "filters", locator, path),
            "sinks": _components(table, "sinks", locator, path),
            "teacher": None,
            "rejects": None,
        }
        if not stage["strategies"]:
            raise ConfigError(
                f'[[stages]] #{i + 1} needs strategies, e.g. strategies = ["paraphrase"]',
                parameter="strategies",
                path=str(path),
                line=locator.line("stages", i),
            )
        for key, section in (("teacher", "teacher"), ("rejects", "rejects")):
            if table.get(key) is not None:
                stage[key] = _component(table[key], section, None, locator, path)
        stages.append(stage)
    return stages


def _check_documents(
    source: Mapping[str, Any], line: Callable[[str], int | None], path: Path
) -> None:
    """The value types of a ``kind = "documents"`` source (ranges are checked on build)."""

    def fail(key: str, rule: str) -> ConfigError:
        return ConfigError(
            f"{key} must be {rule}, got {source[key]!r}",
            parameter=key,
            path=str(path),
            line=line(key),
        )

    for key in ("max_tokens", "overlap", "max_bytes"):
        value = source.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail(key, "a non-negative integer")
    max_tokens, overlap = source.get("max_tokens", 512), source.get("overlap", 64)
    if not 0 <= overlap < max_tokens:
        raise fail("overlap", f"less than max_tokens ({max_tokens})")
    if "tokenizer" in source and (
        not isinstance(source["tokenizer"], str) or not source["tokenizer"].strip()
    ):
        raise fail("tokenizer", '"teacher", "approximate", or a tokenizer name or folder')
    suffixes = source.get("suffixes", [".txt"])
    if not isinstance(suffixes, list) or not all(isinstance(x, str) for x in suffixes):
        raise fail("suffixes", 'a list of file suffixes, e.g. [".md", ".html"]')


def _parse_hub(hub: Any, locator: _Locator, path: Path) -> dict[str, Any]:
    """The checked ``[hub]`` table: known keys of the right types, no token, a valid repo id."""
    if not isinstance(hub, Mapping):
        raise ConfigError(
            "[hub] must be a table", parameter="hub", path=str(path), line=locator.line("hub")
        )

    def at(key: str) -> Place:
        return str(path), locator.line("hub", None, key)

    for key in hub:
        if _SECRET_KEY.search(key):
            raise _error(
                f"[hub] does not take {key!r}: tokens never belong in config files; "
                "set the HF_TOKEN environment variable or run `hf auth login`",
                at(key),
                key,
            )
    _check_keys(hub, HUB_KEYS, "hub", locator, path)
    for key in ("repo_id", "folder", *_HUB_STRINGS):
        if key in hub and (not isinstance(hub[key], str) or not hub[key].strip()):
            raise _error(f"{key} must be a non-empty string, got {hub[key]!r}", at(key), key)
    for key in _HUB_LISTS:
        value = hub.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _error(f"{key} must be a list of strings, got {value!r}", at(key), key)
    if "private" in hub and not isinstance(hub["private"], bool):
        raise _error(
            f"private must be true or false, got {hub['private']!r}", at("private"), "private"
        )
    if "split" in hub and not re.fullmatch(r"[A-Za-z0-9_]+", hub["split"]):
        raise _error(
            f"split must be letters, digits or '_', got {hub['split']!r}", at("split"), "split"
        )
    if "repo_id" in hub:
        _check_repo_id(hub["repo_id"], at("repo_id"), "repo_id")
    return dict(hub)


def load_config(path: str | Path) -> StudyConfig:
    """Read and check a study config file (plugins are looked up by :meth:`StudyConfig.build`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such config file", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(path)
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror or exc}", path=str(path)) from exc
    return parse_config(text, path)


__all__ = [
    "DOCUMENT_KEYS",
    "HUB_KEYS",
    "SECTIONS",
    "SOURCE_KINDS",
    "TEMPLATE_KEYS",
    "HubSettings",
    "Place",
    "StudyConfig",
    "Where",
    "build_component",
    "load_config",
    "parse_config",
    "resolve_path",
]
