"""Run statistics: what went in, what the teacher did, what was kept and what was turned down."""

from __future__ import annotations

import html
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mstudy.records import Completion, Rejection

SAMPLES_PER_REASON = 3


@dataclass
class StrategyStats:
    """Counts for one strategy."""

    requests: int = 0
    completions: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    accepted: int = 0
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    checked: Counter[str] = field(default_factory=Counter)
    """Filter name -> examples of this strategy that reached that filter."""

    def funnel(self) -> list[dict[str, Any]]:
        """Per filter, in order: examples that reached it and those it took out, by reason."""
        steps = []
        for name, seen in self.checked.items():
            stage = f"filter:{name}"
            removed = {r: c for (s, r), c in self.rejected.items() if s == stage}
            steps.append({"filter": name, "checked": seen, "rejected_by": removed})
        return steps

    def funnel_line(self, strategy: str) -> str:
        """``reverse: 30 parsed -> near_dedup 30 (-3: duplicate 3) -> 27 accepted``."""
        steps = self.funnel()
        parts = [f"{strategy}: {steps[0]['checked'] if steps else self.accepted} parsed"]
        for step in steps:
            removed = step["rejected_by"]
            total = sum(removed.values())
            why = ", ".join(f"{r} {c}" for r, c in sorted(removed.items(), key=lambda x: -x[1]))
            parts.append(
                f"{step['filter']} {step['checked']}" + (f" (-{total}: {why})" if total else "")
            )
        parts.append(f"{self.accepted} accepted")
        return " -> ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completions": self.completions,
            "cached": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "rejected_by": [
                {"stage": s, "reason": r, "count": c} for (s, r), c in self.rejected.most_common()
            ],
            "funnel": self.funnel(),
        }


@dataclass
class FilterStats:
    """Counts for one filter: examples it saw and those it took out, by reason."""

    checked: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass
class RoundStats:
    """One round of a strategy asked in rounds: records asked, and those that got an accepted
    example in this round (its yield)."""

    asked: int = 0
    accepted: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"asked": self.asked, "accepted": self.accepted}


@dataclass
class EndpointStats:
    """What one server of the teacher did: requests sent there, answers, failures, latency,
    tokens, its state at the end and its concurrency window (:mod:`mstudy.teachers.remote`)."""

    url: str
    """As shown to people: credentials and query values are ``***``."""
    state: str = "up"
    """``up``; ``down``: failing, requests go to the other servers while there are some."""
    requests: int = 0
    """Attempts sent (retries included)."""
    answered: int = 0
    errors: int = 0
    """Attempts that failed (each retry counts)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_mean_s: float = 0.0
    latency_p95_s: float = 0.0
    """Over answered attempts; after a resumed run, the higher of its parts'."""
    trips: int = 0
    """Times it was taken out of the rotation."""
    last_error: str = ""
    window: dict[str, Any] = field(default_factory=dict)
    """``mode`` (fixed, adaptive), ``min``, ``max``, ``final``, time-weighted ``mean``,
    ``seconds`` and ``series`` (``[seconds from the start, window]`` at each change)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "requests": self.requests,
            "answered": self.answered,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_mean_s": self.latency_mean_s,
            "latency_p95_s": self.latency_p95_s,
            "trips": self.trips,
            "last_error": self.last_error,
            "window": self.window,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EndpointStats:
        return cls(
            url=str(data["url"]),
            state=str(data["state"]),
            requests=_int(data["requests"]),
            answered=_int(data["answered"]),
            errors=_int(data["errors"]),
            prompt_tokens=_int(data["prompt_tokens"]),
            completion_tokens=_int(data["completion_tokens"]),
            latency_mean_s=float(data["latency_mean_s"]),
            latency_p95_s=float(data["latency_p95_s"]),
            trips=_int(data["trips"]),
            last_error=str(data["last_error"]),
            window=dict(data["window"]),
        )

    def then(self, later: EndpointStats) -> EndpointStats:
        """These stats followed by ``later``'s (a resumed run's next part, same server)."""
        answered = self.answered + later.answered
        mean = (
            (self.latency_mean_s * self.answered + later.latency_mean_s * later.answered) / answered
            if answered
            else 0.0
        )
        return EndpointStats(
            url=later.url,
            state=later.state,
            requests=self.requests + later.requests,
            answered=answered,
            errors=self.errors + later.errors,
            prompt_tokens=self.prompt_tokens + later.prompt_tokens,
            completion_tokens=self.completion_tokens + later.completion_tokens,
            latency_mean_s=mean,
            latency_p95_s=max(self.latency_p95_s, later.latency_p95_s),
            trips=self.trips + later.trips,
            last_error=later.last_error or self.last_error,
            window=_joined_windows(self.window, later.window),
        )

    def line(self) -> str:
        """``http://h:8000/v1  up  120 requests, 118 answered, 2 errors, p95 3.1 s, ...``."""
        parts = [
            f"{self.requests} requests",
            f"{self.answered} answered",
            f"{self.errors} errors",
            f"tokens {self.prompt_tokens}/{self.completion_tokens}",
        ]
        if self.answered:
            parts.append(
                f"latency mean {self.latency_mean_s:.2f} s, p95 {self.latency_p95_s:.2f} s"
            )
        w = self.window
        if w:
            parts.append(
                f"window {w.get('mode', '')} min {w.get('min')} max {w.get('max')} "
                f"final {w.get('final')} mean {w.get('mean')}"
            )
        if self.state != "up" and self.last_error:
            parts.append(f"last error: {self.last_error}")
        return f"{self.url}  {self.state}  " + ", ".join(parts)


def _joined_windows(first: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """Two window summaries in a row as one (time-weighted mean, series shifted)."""
    if not first or not later:
        return dict(later or first)
    offset, more = float(first["seconds"]), float(later["seconds"])
    seconds = offset + more
    area = float(first["mean"]) * offset + float(later["mean"]) * more
    mean = area / seconds if seconds else float(later["mean"])
    series = [*first["series"], *([round(t + offset, 3), v] for t, v in later["series"])]
    return {
        **later,
        "min": min(first["min"], later["min"]),
        "max": max(first["max"], later["max"]),
        "mean": round(mean, 3),
        "seconds": round(seconds, 3),
        "series": series,
    }


@dataclass
class Report:
    """Statistics of one study run. ``str(report)`` is a readable table."""

    records: int = 0
    input_rejected: Counter[str] = field(default_factory=Counter)
    strategies: dict[str, StrategyStats] = field(default_factory=dict)
    filters: dict[str, FilterStats] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    elapsed: float = 0.0
    status: str = "running"
    spent_prompt_tokens: int = 0
    spent_completion_tokens: int = 0
    note: str = ""
    rounds: dict[str, list[RoundStats]] = field(default_factory=dict)
    """Per strategy asked in rounds (:mod:`mstudy.rounds`), each round's yield."""
    stages: dict[str, Report] = field(default_factory=dict)
    """A chain's report (:mod:`mstudy.chain`): each stage's own report, in order."""
    endpoints: list[EndpointStats] = field(default_factory=list)
    """Per server of the teacher, when it reports them (``ReportsEndpoints``)."""
    _t0: float = field(default_factory=time.perf_counter, repr=False)
    _sampled: Counter[tuple[str | None, str, str]] = field(default_factory=Counter, repr=False)

    def __post_init__(self) -> None:
        self._endpoints_before: list[EndpointStats] = []
        """What a resumed run's earlier parts recorded per server (see :meth:`resume`)."""

    # -- recording ------------------------------------------------------------------------

    def strategy(self, name: str) -> StrategyStats:
        stats = self.strategies.get(name)
        if stats is None:
            stats = self.strategies[name] = StrategyStats()
        return stats

    def count_completion(self, strategy: str, completion: Completion) -> None:
        stats = self.strategy(strategy)
        stats.completions += 1
        stats.cached += completion.cached
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        if not completion.cached:
            self.spent_prompt_tokens += completion.prompt_tokens
            self.spent_completion_tokens += completion.completion_tokens

    def count_cached(self, calls: dict[str, tuple[int, int, int]]) -> None:
        """Count calls answered from the cache (they cost nothing), per strategy name:
        ``(calls, prompt_tokens, completion_tokens)``."""
        for name, (n, prompt_tokens, completion_tokens) in calls.items():
            stats = self.strategy(name)
            stats.completions += n
            stats.cached += n
            stats.prompt_tokens += prompt_tokens
            stats.completion_tokens += completion_tokens

    def count_rejection(self, rejection: Rejection) -> None:
        if rejection.stage == "input" or rejection.strategy is None:
            self.input_rejected[rejection.reason] += 1
        else:
            self.strategy(rejection.strategy).rejected[(rejection.stage, rejection.reason)] += 1
        if rejection.stage.startswith("filter:"):
            self.filters.setdefault(rejection.stage[7:], FilterStats()).rejected[
                rejection.reason
            ] += 1
        key = (rejection.strategy, rejection.stage, rejection.reason)
        if self._sampled[key] < SAMPLES_PER_REASON:
            self._sampled[key] += 1
            self.samples.append(rejection.to_row())

    def count_round(self, strategy: str, round_: int, accepted: bool) -> None:
        """One record asked in round ``round_`` (0-based) of ``strategy``, and whether it got
        an accepted example."""
        rounds = self.rounds.setdefault(strategy, [])
        while len(rounds) <= round_:
            rounds.append(RoundStats())
        rounds[round_].asked += 1
        rounds[round_].accepted += accepted

    def set_endpoints(self, current: list[EndpointStats]) -> None:
        """The teacher's servers as they stand in this run (after what a resumed run's earlier
        part recorded, for the same servers)."""
        before = {e.url: e for e in self._endpoints_before}
        merged = [before.pop(e.url).then(e) if e.url in before else e for e in current]
        self.endpoints = merged + list(before.values())

    def __getstate__(self) -> dict[str, Any]:
        self.tick()
        return dict(self.__dict__)

    # -- saving (a journal's checkpoint) --------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """The report as a JSON value, which :meth:`from_state` turns back into an equal one.

        Counters keep their order (tuple keys become lists). Rejection samples are stored as
        the rejects sink writes rows (values that are not JSON converted the same way).
        ``elapsed`` is as last set: call :meth:`tick` first to save a running report.
        """
        from mstudy.sinks.jsonl import to_jsonable

        return {
            "records": self.records,
            "input_rejected": dict(self.input_rejected),
            "strategies": {
                name: {
                    "requests": s.requests,
                    "completions": s.completions,
                    "cached": s.cached,
                    "prompt_tokens": s.prompt_tokens,
                    "completion_tokens": s.completion_tokens,
                    "accepted": s.accepted,
                    "rejected": [[stage, reason, n] for (stage, reason), n in s.rejected.items()],
                    "checked": dict(s.checked),
                }
                for name, s in self.strategies.items()
            },
            "filters": {
                name: {"checked": f.checked, "rejected": dict(f.rejected)}
                for name, f in self.filters.items()
            },
            "samples": to_jsonable(self.samples),
            "started": self.started,
            "elapsed": self.elapsed,
            "status": self.status,
            "spent_prompt_tokens": self.spent_prompt_tokens,
            "spent_completion_tokens": self.spent_completion_tokens,
            "note": self.note,
            "sampled": [[*key, n] for key, n in self._sampled.items()],
            "endpoints": to_jsonable([e.to_dict() for e in self.endpoints]),
            **self._chain_state(),
        }

    def _chain_state(self) -> dict[str, Any]:
        """Rounds and stages, in the saved state only when there are any (older states
        without them load as before)."""
        out: dict[str, Any] = {}
        if self.rounds:
            out["rounds"] = {
                name: [[r.asked, r.accepted] for r in rounds]
                for name, rounds in self.rounds.items()
            }
        if self.stages:
            out["stages"] = {name: stage.to_state() for name, stage in self.stages.items()}
        return out

    def _load_chain_state(self, state: Mapping[str, Any]) -> None:
        self.rounds = {
            str(name): [RoundStats(_int(asked), _int(accepted)) for asked, accepted in rounds]
            for name, rounds in state.get("rounds", {}).items()
        }
        self.stages = {
            str(name): Report.from_state(stage) for name, stage in state.get("stages", {}).items()
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Report:
        """The report :meth:`to_state` saved; ValueError when ``state`` is not one."""
        try:
            report = cls(
                records=_int(state["records"]),
                input_rejected=Counter(_counts(state["input_rejected"])),
                strategies={
                    str(name): StrategyStats(
                        requests=_int(s["requests"]),
                        completions=_int(s["completions"]),
                        cached=_int(s["cached"]),
                        prompt_tokens=_int(s["prompt_tokens"]),
                        completion_tokens=_int(s["completion_tokens"]),
                        accepted=_int(s["accepted"]),
                        rejected=Counter(
                            {
                                (str(stage), str(reason)): _int(n)
                                for stage, reason, n in s["rejected"]
                            }
                        ),
                        checked=Counter(_counts(s["checked"])),
                    )
                    for name, s in state["strategies"].items()
                },
                filters={
                    str(name): FilterStats(
                        checked=_int(f["checked"]), rejected=Counter(_counts(f["rejected"]))
                    )
                    for name, f in state["filters"].items()
                },
                samples=[dict(row) for row in state["samples"]],
                started=float(state["started"]),
                elapsed=float(state["elapsed"]),
                status=str(state["status"]),
                spent_prompt_tokens=_int(state["spent_prompt_tokens"]),
                spent_completion_tokens=_int(state["spent_completion_tokens"]),
                note=str(state["note"]),
                endpoints=[EndpointStats.from_dict(e) for e in state.get("endpoints", [])],
            )
            report._sampled = Counter(
                {
                    (strategy, str(stage), str(reason)): _int(n)
                    for strategy, stage, reason, n in state["sampled"]
                }
            )
            report._load_chain_state(state)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a saved report ({type(exc).__name__}: {exc})") from exc
        report._t0 = time.perf_counter() - report.elapsed
        return report

    def rejections(
        self, strategy: str | None = None, stage: str | None = None, reason: str | None = None
    ) -> list[dict[str, Any]]:
        """Sample rejected rows (a few per strategy, stage and reason), optionally narrowed."""
        return [
            row
            for row in self.samples
            if (strategy is None or row["strategy"] == strategy)
            and (stage is None or row["stage"] == stage)
            and (reason is None or row["reason"] == reason)
        ]

    def finish(self, status: str = "done") -> None:
        self.elapsed = time.perf_counter() - self._t0
        self.status = status

    def resume(self) -> None:
        """Carry on timing a report restored from a checkpoint."""
        self._t0 = time.perf_counter() - self.elapsed
        self.status = "running"
        self.note = ""
        self._endpoints_before = list(self.endpoints)

    def tick(self) -> None:
        """Refresh ``elapsed`` while running."""
        self.elapsed = time.perf_counter() - self._t0

    # -- totals ---------------------------------------------------------------------------

    @property
    def accepted(self) -> int:
        """Rows accepted (a chain's: those of its last stage)."""
        if self.stages:
            return list(self.stages.values())[-1].accepted
        return sum(s.accepted for s in self.strategies.values())

    @property
    def rejected(self) -> int:
        """Rows rejected (a chain's: of every stage)."""
        return (
            sum(self.input_rejected.values())
            + sum(sum(s.rejected.values()) for s in self.strategies.values())
            + sum(stage.rejected for stage in self.stages.values())
        )

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.strategies.values()) + sum(
            stage.requests for stage in self.stages.values()
        )

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.strategies.values()) + sum(
            stage.prompt_tokens for stage in self.stages.values()
        )

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.strategies.values()) + sum(
            stage.completion_tokens for stage in self.stages.values()
        )

    @property
    def cached(self) -> int:
        return sum(s.cached for s in self.strategies.values()) + sum(
            stage.cached for stage in self.stages.values()
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "status": self.status,
            "records": self.records,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "requests": self.requests,
            "cached": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "spent_prompt_tokens": self.spent_prompt_tokens,
            "spent_completion_tokens": self.spent_completion_tokens,
            "note": self.note,
            "elapsed_s": round(self.elapsed, 3),
            "input_rejected": dict(self.input_rejected),
            "strategies": {k: v.to_dict() for k, v in self.strategies.items()},
            "filters": {
                k: {"checked": v.checked, "rejected": dict(v.rejected)}
                for k, v in self.filters.items()
            },
            "rejection_samples": self.samples,
            **self._chain_dict(),
            "endpoints": [e.to_dict() for e in self.endpoints],
        }

    def _chain_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.rounds:
            out["rounds"] = {
                name: [r.to_dict() for r in rounds] for name, rounds in self.rounds.items()
            }
        if self.stages:
            out["stages"] = {name: stage.to_dict() for name, stage in self.stages.items()}
        return out

    def _round_lines(self) -> list[str]:
        """``reverse: round 1 10 asked -> 7 accepted; round 2 3 asked -> 2 accepted``."""
        return [
            f"{name}: "
            + "; ".join(
                f"round {i} {r.asked} asked -> {r.accepted} accepted"
                for i, r in enumerate(rounds, 1)
            )
            for name, rounds in self.rounds.items()
        ]

    def _stages_text(self) -> str:
        """A chain's report: a summary line, then each stage's report, indented."""
        lines = [
            f"mstudy chain report: {self.status}, {len(self.stages)} stages, {self.records} "
            f"records, {self.accepted} accepted, {self.rejected} rejected, {self.elapsed:.1f}s"
        ]
        if self.note:
            lines.append(self.note)
        for i, (name, stage) in enumerate(self.stages.items(), 1):
            lines.append(f"stage {i}: {name}")
            lines.extend(f"  {line}" for line in str(stage).splitlines())
        return "\n".join(lines)

    # -- rendering ------------------------------------------------------------------------

    def _rows(self) -> list[tuple[str, str, str, str, str, str]]:
        rows = []
        for name, s in self.strategies.items():
            tokens = f"{s.prompt_tokens}/{s.completion_tokens}"
            rows.append(
                (
                    name,
                    str(s.requests),
                    str(s.cached),
                    tokens,
                    str(s.accepted),
                    str(sum(s.rejected.values())),
                )
            )
        return rows

    def _reasons(self) -> list[tuple[str, str, str, int]]:
        out = [("(input)", "input", r, c) for r, c in self.input_rejected.most_common()]
        for name, s in self.strategies.items():
            out.extend((name, stage, reason, c) for (stage, reason), c in s.rejected.most_common())
        return out

    def __str__(self) -> str:
        if self.stages:
            return self._stages_text()
        head = ("strategy", "requests", "cached", "tokens in/out", "accepted", "rejected")
        rows = [head, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [
            f"mstudy report: {self.status}, {self.records} records, {self.accepted} accepted, "
            f"{self.rejected} rejected, {self.elapsed:.1f}s"
        ]
        if self.note:
            lines.append(self.note)
        for i, row in enumerate(rows):
            lines.append(
                "  ".join(
                    c.ljust(w) if j == 0 else c.rjust(w)
                    for j, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        reasons = self._reasons()
        if reasons:
            lines.append("rejections:")
            lines.extend(
                f"  {n:<12} {stage:<16} {count:>7}  {reason}" for n, stage, reason, count in reasons
            )
        if self.filters:
            lines.append("funnel:")
            lines.extend(f"  {s.funnel_line(name)}" for name, s in self.strategies.items())
        if self.rounds:
            lines.append("rounds:")
            lines.extend(f"  {line}" for line in self._round_lines())
        if self.endpoints:
            lines.append("endpoints:")
            lines.extend(f"  {e.line()}" for e in self.endpoints)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Report(status={self.status!r}, records={self.records}, accepted={self.accepted}, "
            f"rejected={self.rejected}, requests={self.requests}, elapsed={self.elapsed:.2f}s)"
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        if self.stages:
            sections = "".join(
                f"<details open><summary>stage {i}: {esc(name)}</summary>"
                f"{stage._repr_html_()}</details>"
                for i, (name, stage) in enumerate(self.stages.items(), 1)
            )
            return (
                f"<div><b>mstudy chain report</b>: {esc(self.status)}, {len(self.stages)} "
                f"stages, {self.records} records, {self.accepted} accepted, {self.rejected} "
                f"rejected, {self.elapsed:.1f}s{sections}</div>"
            )
        rounds = "".join(f"<li>{esc(line)}</li>" for line in self._round_lines())
        round_list = f"<details><summary>rounds</summary><ul>{rounds}</ul></details>"
        head = "".join(
            f"<th>{h}</th>"
            for h in ("strategy", "requests", "cached", "tokens in/out", "accepted", "rejected")
        )
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in self._rows()
        )
        reasons = "".join(
            f"<tr><td>{esc(n)}</td><td>{esc(s)}</td><td>{esc(r)}</td><td>{c}</td></tr>"
            for n, s, r, c in self._reasons()
        )
        reason_table = (
            "<details><summary>rejections by reason</summary><table><tr><th>strategy</th>"
            f"<th>stage</th><th>reason</th><th>count</th></tr>{reasons}</table></details>"
            if reasons
            else ""
        )
        return (
            f"<div><b>mstudy report</b>: {esc(self.status)}, {self.records} records, "
            f"{self.accepted} accepted, {self.rejected} rejected, {self.elapsed:.1f}s"
            f"<table><tr>{head}</tr>{body}</table>{reason_table}"
            f"{round_list if rounds else ''}</div>"
        )


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"{value!r} is not an integer")
    return value


def _counts(value: Mapping[str, Any]) -> dict[str, int]:
    return {str(key): _int(n) for key, n in value.items()}


__all__ = ["EndpointStats", "FilterStats", "Report", "RoundStats", "StrategyStats"]
