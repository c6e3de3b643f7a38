"""What one run of the reversal probe measured (:class:`ProbeResult`) and its markdown table.

Shared by the run that fills it (:mod:`mstudy.probes.reversal`), the files it is written to
(:mod:`mstudy.probes.outputs`) and the chart (:mod:`mstudy.probes.chart`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mstudy.probes.common import seed_range
from mstudy.probes.progress import Times

__all__ = ["CONDITIONS", "ConditionResult", "ProbeResult"]


#: Condition name -> table label, in table order.
CONDITIONS = {
    "forward": "forward only",
    "teacher_reversals": "+ teacher reversals",
    "teacher_paraphrases": "+ teacher paraphrases (same count)",
    "rule_reversals": "+ rule reversals (ceiling)",
}


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
    }


@dataclass
class ConditionResult:
    """One training condition: accuracies per seed on the scored (held-out) facts."""

    name: str
    label: str
    extra_statements: int
    training_texts: int
    forward: list[float] = field(default_factory=list)
    reverse: list[float] = field(default_factory=list)
    seen_forward: list[float] = field(default_factory=list)
    seen_reverse: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "extra_statements": self.extra_statements,
            "training_texts": self.training_texts,
            "forward": {"per_seed": self.forward, **_stats(self.forward)},
            "reverse": {"per_seed": self.reverse, **_stats(self.reverse)},
            "format_facts": {
                "note": "accuracy on the facts whose QA pairs were trained on (format check)",
                "forward": _stats(self.seen_forward),
                "reverse": _stats(self.seen_reverse),
            },
            "train_seconds": self.train_seconds,
        }


@dataclass
class ProbeResult:
    """Everything one run of the probe measured. ``str()`` is the table with notes."""

    teacher: str
    world: dict[str, Any]
    settings: dict[str, Any]
    conditions: list[ConditionResult]
    chance: dict[str, float]
    teacher_stats: dict[str, Any]
    paraphrase_stats: dict[str, Any]
    leak_check: dict[str, Any]
    times: Times
    environment: dict[str, Any]
    reversals: list[dict[str, Any]] = field(default_factory=list, repr=False)
    world_data: dict[str, Any] = field(default_factory=dict, repr=False)
    training_data: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def total_seconds(self) -> float:
        """Wall time of all stages together."""
        return sum(v["wall"] for v in self.times.values())

    def condition(self, name: str) -> ConditionResult:
        for c in self.conditions:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": "reversal",
            "teacher": self.teacher,
            "world": self.world,
            "settings": self.settings,
            "chance": self.chance,
            "conditions": [c.to_dict() for c in self.conditions],
            "teacher_stats": self.teacher_stats,
            "paraphrase_stats": self.paraphrase_stats,
            "leak_check": self.leak_check,
            "times": self.times,
            "environment": self.environment,
        }

    def table(self) -> str:
        """A markdown table of the conditions, then the teacher and timing lines."""
        seeds = self.settings["seeds"]
        lines = [
            f"| condition (student, {seeds} seed{'s' if seeds != 1 else ''}) | extra statements "
            "| forward acc | reverse acc |",
            "|---|---:|---:|---:|",
        ]
        for c in self.conditions:
            forward, reverse = seed_range(c.forward), seed_range(c.reverse)
            lines.append(f"| {c.label} | {c.extra_statements} | {forward} | {reverse} |")
        lines.append(
            f"| chance (1 / entities of the answer's type) | | {self.chance['forward']:.1%} "
            f"| {self.chance['reverse']:.1%} |"
        )
        t = self.teacher_stats
        p = self.paraphrase_stats
        w = self.world
        notes = [
            "",
            f"World: {w['facts']} facts ({w['scored']} scored, {w['format']} with QA for format), "
            f"{w['relations']} relations, {w['entities']} entities. Accuracy: exact match of "
            "the greedy answer on the scored facts' questions; mean [min-max] over seeds.",
            f"Teacher {self.teacher}: yield {t['yield']:.0%} ({t['facts_with_reversal']}/"
            f"{t['facts']} facts got an accepted reversal), precision {t['precision']:.0%} "
            f"({t['true']}/{t['facts_with_reversal']} true in the world); "
            f"{t['requests']} requests, {t['rounds']} round(s) of sampling"
            + (
                f", {t['round_trip_requests']} round-trip requests. "
                if t.get("round_trip_requests")
                else ". "
            )
            + f"Paraphrase control: {p['used']} paraphrases for {p['wanted']} reversals "
            f"({p['used'] - p['from_rules']} by the teacher, {p['from_rules']} by rule).",
            "Time (wall, with this process's CPU time in brackets): "
            + ", ".join(f"{k} {v['wall']:.1f}s [{v['cpu']:.1f}s]" for k, v in self.times.items())
            + f"; total {self.total_seconds:.0f}s.",
            f"Leak check: {self.leak_check['questions']} scored questions, none in the "
            f"{self.leak_check['training_texts']} distinct training texts"
            + (
                f" ({self.leak_check['dropped']} teacher statements dropped for containing one)."
                if self.leak_check["dropped"]
                else "."
            ),
        ]
        return "\n".join(lines + notes)

    def __str__(self) -> str:
        return self.table()
