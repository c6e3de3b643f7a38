"""What one run of the composition probe measured (:class:`ComposeResult`) and its table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mstudy.probes.common import mean as _mean
from mstudy.probes.common import seed_range as _fmt
from mstudy.probes.common import seed_stats as _stats
from mstudy.probes.progress import Times

__all__ = ["CEILINGS", "ComposeCondition", "ComposeResult"]

#: Teacher condition -> its rule ceiling.
CEILINGS = {"teacher_chains": "rule_chains", "teacher_connect": "rule_connect"}


@dataclass
class ComposeCondition:
    """One training condition: held-out and format-half accuracy per seed."""

    name: str
    label: str
    mode: str
    extra_texts: int
    training_texts: int
    held_out: list[float] = field(default_factory=list)
    format: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "answers": self.mode,
            "extra_texts": self.extra_texts,
            "training_texts": self.training_texts,
            "held_out": _stats(self.held_out),
            "format_half": {
                "note": "accuracy on the questions whose answers were trained on (format check)",
                **_stats(self.format),
            },
            "train_seconds": self.train_seconds,
            "examples": self.examples,
        }


@dataclass
class ComposeResult:
    """Everything one run of the composition probe measured. ``str()`` is the table."""

    teacher: str
    world: dict[str, Any]
    settings: dict[str, Any]
    conditions: list[ComposeCondition]
    chance: float
    teacher_stats: dict[str, Any]
    leak_check: dict[str, Any]
    times: Times
    environment: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    world_data: dict[str, Any] = field(default_factory=dict, repr=False)
    training_data: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def total_seconds(self) -> float:
        return sum(v["wall"] for v in self.times.values())

    def condition(self, name: str) -> ComposeCondition:
        for c in self.conditions:
            if c.name == name:
                return c
        raise KeyError(name)

    def share_of_ceiling(self) -> dict[str, float | None]:
        """Teacher condition -> its mean held-out accuracy over its ceiling's."""
        names = {c.name for c in self.conditions}
        out: dict[str, float | None] = {}
        for teacher, ceiling in CEILINGS.items():
            if teacher in names:
                top = _mean(self.condition(ceiling).held_out)
                got = _mean(self.condition(teacher).held_out)
                out[teacher] = got / top if top > 0 else None
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": "compose",
            "teacher": self.teacher,
            "world": self.world,
            "settings": self.settings,
            "chance": self.chance,
            "conditions": [c.to_dict() for c in self.conditions],
            "share_of_ceiling": self.share_of_ceiling(),
            "teacher_stats": self.teacher_stats,
            "leak_check": self.leak_check,
            "times": self.times,
            "environment": self.environment,
        }

    def table(self) -> str:
        """A markdown table of the conditions, then the teacher, leak and timing lines."""
        seeds = self.settings["seeds"]
        lines = [
            f"| condition (student, {seeds} seed{'s' if seeds != 1 else ''}) | answers "
            "| extra texts | held-out two-hop acc | format-half acc |",
            "|---|---|---:|---:|---:|",
        ]
        for c in self.conditions:
            how = "by its chain" if c.mode == "chain" else "directly"
            lines.append(
                f"| {c.label} | {how} | {c.extra_texts} | {_fmt(c.held_out)} | {_fmt(c.format)} |"
            )
        lines.append(f"| chance (1 / entities of the answer's type) | | | {self.chance:.1%} | |")
        w, t, leak = self.world, self.teacher_stats, self.leak_check
        cut = w.get("shortcuts")
        if cut:
            lines.append(
                "| always the format half's commonest answer | | | "
                f"{cut['format_constant']:.1%} | |"
            )
        ch, co, pa = t["chains"], t["connect"], t["paraphrases"]
        shares = ", ".join(
            f"{name.replace('teacher_', '')} {share:.0%} of its ceiling"
            for name, share in self.share_of_ceiling().items()
            if share is not None
        )
        notes = [
            "",
            f"World: {w['facts']} atomic facts, {w['questions']} two-hop questions "
            f"({w['held_out']} held out, {w['format']} with answers for format), "
            f"{w['entities']} entities. Accuracy: exact match of the greedy answer (the final "
            "answer of a written chain) on the held-out questions; mean [min-max] over seeds.",
            f"Teacher {self.teacher}: chains {ch['accepted']}/{ch['questions']} format questions "
            f"(verified; {ch['restate_both_facts']} restate both facts), composed statements "
            f"{co['accepted']}/{co['questions']} ({_parts(co.get('selected'), co['true'])}; of all "
            f"{_total(co.get('all_written'))} it wrote: {_parts(co.get('all_written'), None)}), "
            f"paraphrases {pa['accepted']}/{pa['wanted']} "
            f"({self.settings['paraphrases_from_rules']} filled by rule); "
            f"{ch['requests'] + co['requests'] + pa['requests']} requests."
            + (f" Teacher conditions: {shares}." if shares else ""),
            "Time (wall, with this process's CPU time in brackets): "
            + ", ".join(f"{k} {v['wall']:.1f}s [{v['cpu']:.1f}s]" for k, v in self.times.items())
            + f"; total {self.total_seconds:.0f}s.",
            (
                f"Without composing: the held-out half's own commonest answer (an oracle) gets "
                f"{cut['constant']:.1%}; {cut['own_fact']} held-out answers are the subject's "
                f"own one-hop fact, {cut['shared_first_hop']} held-out first hops are in the "
                "format half."
                if cut
                else None
            ),
            f"Leak check: {leak['questions']} held-out questions and their {leak['chains']} rule "
            f"chains, none in the {leak['training_texts']} distinct training texts"
            + (
                f" ({leak['dropped']} teacher texts dropped for holding one)."
                if leak["dropped"]
                else "."
            ),
        ]
        return "\n".join(lines + [n for n in notes if n is not None])

    def __str__(self) -> str:
        return self.table()


def _total(parts: dict[str, int] | None) -> int:
    return sum(parts.values()) if parts else 0


def _parts(parts: dict[str, int] | None, true: int | None) -> str:
    """``"12 true, 1 false, 3 undecided"`` (or ``"12 true"`` from an old report)."""
    if not parts:
        return f"{true} true" if true is not None else "none"
    return ", ".join(f"{parts.get(k, 0)} {k}" for k in ("true", "false", "undecided"))
