"""The pages of ``mstudy view``: a Starlette app over a :class:`StudyOutputs` or a
:class:`ProbeFolder`, rendered by jinja2 templates. Read-only; a failure in a handler becomes
an error page that says what went wrong (never a traceback)."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mstudy import __version__
from mstudy.view.outputs import ProbeFolder, StudyOutputs
from mstudy.view.rows import Page, Query, Rows, Skip

__all__ = ["PAGE_SIZE", "build_app"]

PAGE_SIZE = 50
_HIDDEN = {"id", "source_id", "strategy", "provenance", "parents", "generation"}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("mstudy.view", "templates"),
    autoescape=True,
)
_env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=str)
_env.filters["num"] = lambda v: "—" if v is None else f"{v:,}" if isinstance(v, int) else v


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


_env.filters["text"] = _text


def _render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("mstudy_version", __version__)
    return HTMLResponse(_env.get_template(name).render(**context), status_code=status)


def _int(request: Request, name: str) -> int:
    try:
        return max(0, int(request.query_params.get(name, "0")))
    except ValueError:
        return 0


def _query(request: Request) -> Query:
    def get(name: str) -> str | None:
        value = request.query_params.get(name)
        return value if value not in (None, "") else None

    return Query(
        strategy=get("strategy"),
        stage=get("stage"),
        reason=get("reason"),
        source_id=get("source"),
        text=get("q"),
    )


def build_app(target: StudyOutputs | ProbeFolder, *, refresh_s: float = 2.0) -> Starlette:
    """The web app that shows ``target``; pages poll for changes every ``refresh_s`` seconds
    (0: never) and reload when something changed."""
    lock = threading.Lock()  # one reader of the files at a time: indexes are shared

    def base(request: Request, **context: Any) -> dict[str, Any]:
        return {
            "title": target.title,
            "version": target.version(),
            "refresh_ms": int(refresh_s * 1000),
            "path": request.url.path,
            "live": isinstance(target, StudyOutputs) and target.live,
            "live_status": _live_status(target),
            "probe": isinstance(target, ProbeFolder),
            **context,
        }

    def version(request: Request) -> Response:
        with lock:
            if isinstance(target, StudyOutputs):
                target.refresh()
            return JSONResponse(
                {
                    "version": target.version(),
                    "live": isinstance(target, StudyOutputs) and target.live,
                }
            )

    def home(request: Request) -> Response:
        with lock:
            if isinstance(target, ProbeFolder):
                return _probe_page(request, target, base)
            target.refresh()
            return _overview(request, target, base)

    def rows(request: Request) -> Response:
        with lock:
            study = _study(target)
            study.refresh()
            return _rows_page(request, study, base)

    def rejects(request: Request) -> Response:
        with lock:
            study = _study(target)
            study.refresh()
            return _rejects_page(request, study, base)

    def funnel(request: Request) -> Response:
        with lock:
            study = _study(target)
            study.refresh()
            accepted, rejected = _funnel_counts(study)
        from mstudy.view.charts import funnel_png

        return Response(funnel_png(accepted, rejected), media_type="image/png")

    def probe_chart(request: Request) -> Response:
        if not isinstance(target, ProbeFolder):
            raise HTTPException(404, "not a probe folder")
        path = target.folder / "chart.png"
        if path.is_file():
            with open(path, "rb") as handle:
                return Response(handle.read(), media_type="image/png")
        report = target.report()
        if report is None:
            raise HTTPException(404, f"no chart.png and no report.json in {target.folder}")
        from mstudy.probes.chart import chart_from_report

        return Response(chart_from_report(report), media_type="image/png")

    async def error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, message = exc.status_code, str(exc.detail)
        else:
            status, message = 500, f"{type(exc).__name__}: {exc}"
        return _render(
            "error.html.j2",
            status,
            title=target.title,
            version="",
            refresh_ms=0,
            path=request.url.path,
            live=False,
            live_status="",
            probe=isinstance(target, ProbeFolder),
            code=status,
            message=message,
        )

    return Starlette(
        routes=[
            Route("/", home),
            Route("/rows", rows),
            Route("/rejects", rejects),
            Route("/funnel.png", funnel),
            Route("/probe/chart.png", probe_chart),
            Route("/api/version", version),
        ],
        exception_handlers={Exception: error, HTTPException: error},
    )


def _live_status(target: StudyOutputs | ProbeFolder) -> str:
    """The journaled run's status (``running``, or ``stopped`` with why), or ""."""
    if not isinstance(target, StudyOutputs) or not target.live or target.journal is None:
        return ""
    report = target.journal.report() or {}
    status = str(report.get("status", "running"))
    return f"{status}: {report['note']}" if report.get("note") else status


def _study(target: StudyOutputs | ProbeFolder) -> StudyOutputs:
    if not isinstance(target, StudyOutputs):
        raise HTTPException(404, "this is a probe folder: its page is /")
    return target


# -- the overview ---------------------------------------------------------------------------


def _funnel_counts(
    study: StudyOutputs,
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    report = study.report()
    accepted: dict[str, int] = {}
    rejected: dict[str, dict[str, int]] = defaultdict(dict)
    if report is not None:
        for name, stats in report["strategies"].items():
            accepted[name] = int(stats.get("accepted", 0))
            for item in stats.get("rejected_by", []):
                by = rejected[name]
                by[item["stage"]] = by.get(item["stage"], 0) + int(item["count"])
        inputs = sum(int(n) for n in report.get("input_rejected", {}).values())
        if inputs:
            rejected["(input)"]["input"] = inputs
    else:
        counted = study.counted()
        accepted = dict(counted["accepted"])
        for (strategy, stage, _reason), n in counted["rejected"].items():
            by = rejected[strategy or "(input)"]
            by[stage] = by.get(stage, 0) + n
    return accepted, dict(rejected)


def _overview(request: Request, study: StudyOutputs, base: Any) -> Response:
    report = study.report()
    strategies: list[dict[str, Any]] = []
    reasons: list[dict[str, Any]] = []
    if report is not None:
        for name, stats in report["strategies"].items():
            strategies.append({"name": name, **stats})
            reasons.extend(
                {"strategy": name, "stage": r["stage"], "reason": r["reason"], "count": r["count"]}
                for r in stats.get("rejected_by", [])
            )
        reasons.extend(
            {"strategy": "", "stage": "input", "reason": reason, "count": n}
            for reason, n in report.get("input_rejected", {}).items()
        )
    else:
        counted = study.counted()
        by_strategy: Counter[str] = Counter()
        for (strategy, stage, reason), n in sorted(
            counted["rejected"].items(), key=lambda x: -x[1]
        ):
            if strategy:
                by_strategy[strategy] += n
            reasons.append({"strategy": strategy, "stage": stage, "reason": reason, "count": n})
        for name in dict.fromkeys([*counted["accepted"], *by_strategy]):
            strategies.append(
                {
                    "name": name,
                    "accepted": counted["accepted"].get(name, 0),
                    "rejected": by_strategy.get(name, 0),
                }
            )
    cost = None
    if report is not None and study.prices is not None:
        price_in, price_out = study.prices
        cost = (
            report.get("spent_prompt_tokens", 0) * price_in
            + report.get("spent_completion_tokens", 0) * price_out
        ) / 1_000_000
    totals = {
        "accepted": sum(int(s.get("accepted", 0)) for s in strategies),
        "rejected": sum(int(r["count"]) for r in reasons),
    }
    progress = None
    if study.live and study.journal is not None and study.journal.checkpoint is not None:
        checkpoint = study.journal.checkpoint
        progress = {
            "items_done": checkpoint.get("items_done"),
            "phase": checkpoint.get("phase"),
            "saved_at": checkpoint.get("saved_at"),
            "directory": str(study.journal.directory),
            "unread": study.journal.accepted.unread + study.journal.rejects.unread,
        }
    try:
        import matplotlib  # noqa: F401

        chart = bool(strategies or reasons)
    except ImportError:
        chart = False
    return _render(
        "overview.html.j2",
        **base(
            request,
            report=report,
            strategies=strategies,
            reasons=reasons,
            totals=totals,
            cost=cost,
            progress=progress,
            chart=chart,
            files=[(str(t.path), t.kind, len(t)) for t in study.tables()],
            skips=study.skips(),
            missing=[str(p) for p in study.missing()],
        ),
    )


# -- rows and rejections ---------------------------------------------------------------------


def _pick(tables: list[Rows], request: Request) -> tuple[Rows | None, int]:
    if not tables:
        return None, 0
    index = min(_int(request, "file"), len(tables) - 1)
    return tables[index], index


def _page_links(request: Request, page: Page) -> dict[str, str | None]:
    params = dict(request.query_params)

    def url(at: int) -> str:
        from urllib.parse import urlencode

        return f"{request.url.path}?{urlencode({**params, 'at': str(at)})}"

    previous = None
    if page.cursor > 0:
        previous = url(max(0, page.cursor - PAGE_SIZE)) if page.total is not None else url(0)
    return {
        "next": url(page.next) if page.next is not None else None,
        "previous": previous,
        "first": url(0) if page.cursor > 0 else None,
    }


def _rows_page(request: Request, study: StudyOutputs, base: Any) -> Response:
    tables = study.accepted()
    table, index = _pick(tables, request)
    query = _query(request)
    page = table.page(query, _int(request, "at"), PAGE_SIZE) if table else None
    shown = []
    if page is not None:
        for number, row in page.rows:
            shown.append(_shown_row(number, row, study))
    return _render(
        "rows.html.j2",
        **base(
            request,
            files=[str(t.path) for t in tables],
            file_index=index,
            strategies=sorted(table.values("strategy")) if table else [],
            query=query,
            page=page,
            rows=shown,
            links=_page_links(request, page) if page else {},
            source_known=study.source is not None,
            skips=study.skips(),
        ),
    )


def _shown_row(number: int, row: Mapping[str, Any], study: StudyOutputs) -> dict[str, Any]:
    fields = {k: v for k, v in row.items() if k not in _HIDDEN}
    scores = {k: v for k, v in fields.items() if k.endswith("_score")}
    for key in scores:
        fields.pop(key)
        reason = key[: -len("_score")] + "_reason"
        if reason in fields:
            scores[reason] = fields.pop(reason)
    source = None
    if study.source is not None:
        source = study.source.get(str(row.get("source_id", "")))
    parents = row.get("parents")
    return {
        "number": number,
        "id": row.get("id"),
        "source_id": row.get("source_id"),
        "strategy": row.get("strategy"),
        "fields": fields,
        "scores": scores,
        "provenance": row.get("provenance"),
        "parents": parents if isinstance(parents, list) else None,
        "generation": row.get("generation"),
        "source": source,
    }


def _rejects_page(request: Request, study: StudyOutputs, base: Any) -> Response:
    tables = study.rejects()
    table, index = _pick(tables, request)
    query = _query(request)
    page = table.page(query, _int(request, "at"), PAGE_SIZE) if table else None
    groups = []
    if table is not None:
        counts = table.counts("stage", "reason", "strategy")
        groups = [
            {"stage": k[0], "reason": k[1], "strategy": k[2], "count": n}
            for k, n in sorted(counts.items(), key=lambda x: (x[0][0], -x[1]))
        ]
    shown = []
    if page is not None:
        for number, row in page.rows:
            value = row.get("row")
            inner: Mapping[str, Any] = value if isinstance(value, Mapping) else {}
            reply = inner.get("reply") if "reply" in inner else inner.get("text")
            shown.append({"number": number, "row": row, "reply": reply, "inner": inner})
    return _render(
        "rejects.html.j2",
        **base(
            request,
            files=[str(t.path) for t in tables],
            file_index=index,
            groups=groups,
            query=query,
            page=page,
            rows=shown,
            links=_page_links(request, page) if page else {},
            skips=study.skips(),
        ),
    )


# -- a probe folder --------------------------------------------------------------------------


def _markdown_table(text: str) -> tuple[list[list[str]], list[str]]:
    """The pipe table of ``table.md`` as rows of cells (header first) and the other lines."""
    rows, notes = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|"):
            cells = [c.strip() for c in stripped[1:-1].split("|")]
            if not all(set(c) <= set("-:") for c in cells):
                rows.append(cells)
        elif stripped:
            notes.append(stripped)
    return rows, notes


def _verdict(row: Mapping[str, Any]) -> str:
    value = row.get("verdict", row.get("true"))
    if value is True or value == "true":
        return "true"
    if value is False or value == "false":
        return "false"
    return "undecided"


def _probe_page(request: Request, probe: ProbeFolder, base: Any) -> Response:
    report = probe.report()
    table, notes = _markdown_table(probe.table() or "")
    reversals = probe.reversals()
    verdict = request.query_params.get("verdict") or None
    text = request.query_params.get("q") or None
    marked = []
    counts: Counter[str] = Counter()
    for number, row in reversals.iter_rows():
        mark = _verdict(row)
        counts[mark] += 1
        if (verdict is None or mark == verdict) and (
            text is None or text.casefold() in json.dumps(row, ensure_ascii=False).casefold()
        ):
            marked.append({"number": number, "row": row, "verdict": mark})
    at = _int(request, "at")
    skips = list(reversals.skips)
    if reversals.error:
        skips.append(Skip(str(reversals.path), None, reversals.error))
    return _render(
        "probe.html.j2",
        **base(
            request,
            report=report,
            table=table,
            notes=notes,
            chart=(probe.folder / "chart.png").is_file() or report is not None,
            reversals=marked[at : at + PAGE_SIZE],
            matched=len(marked),
            at=at,
            page_size=PAGE_SIZE,
            counts=counts,
            verdict=verdict or "",
            q=text or "",
            skips=skips,
        ),
    )
