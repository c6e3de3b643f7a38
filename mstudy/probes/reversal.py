"""The reversal probe: does a teacher's studying fix a student's reversal curse?

Steps (each timed):

1. **World**: invented facts (:func:`~mstudy.probes.world.generate_world`) or a user's own
   (:func:`~mstudy.probes.world.load_world`).
2. **Study**: the forward statements go through a real :class:`~mstudy.Study` with the
   ``reverse`` strategy on the chosen teacher (few-shot prompt, reply prefilled with the object,
   several samples per fact in rounds, the swap filter, then :func:`select_consistent`), and the
   facts that got a reversal go through ``paraphrase`` (subject-first filter) for the control.
   The ceiling's reversals come from the ``rules`` teacher through the same machinery.
3. **Student**: a tiny GPT-2 trained from scratch per condition and seed
   (:mod:`mstudy.probes.student`): forward statements only; + the teacher's reversals; + as
   many teacher paraphrases (data-size control); + rule reversals (ceiling).
4. **Result**: forward and reverse question accuracy on the held-out half (mean, min-max over
   seeds), chance level, the teacher's yield and precision, time per stage:
   :class:`ProbeResult`, written by :func:`write_outputs` as ``report.json``, ``table.md``,
   ``chart.png``, ``reversals.jsonl`` and ``world.json``.

Honesty rules kept here: the student never sees a scored question (checked verbatim, the run
stops otherwise), chance is reported, the paraphrase control is always trained, and every
number comes from this run.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mstudy.errors import LeakError, ProbeError
from mstudy.filters import ExactDedup, LengthFilter
from mstudy.interfaces import Teacher
from mstudy.probes.chart import render_chart
from mstudy.probes.rules import (
    Candidate,
    SubjectFirstFilter,
    SwapFilter,
    entities_by_id,
    group_key,
    rules_teacher,
    select_consistent,
)
from mstudy.probes.student import StudentConfig, WordTokenizer, answer_questions, train_student
from mstudy.probes.world import Fact, World, canonical, generate_world, load_world
from mstudy.records import Example, Rejection
from mstudy.strategies import Paraphrase, Reverse
from mstudy.study import Study
from mstudy.text import normalize

__all__ = [
    "CONDITIONS",
    "ConditionResult",
    "LeakError",
    "ProbeError",
    "ProbeResult",
    "check_no_leak",
    "probe_paraphrase",
    "probe_reverse",
    "run_probe",
    "write_outputs",
]

log = logging.getLogger(__name__)

Times = dict[str, dict[str, float]]
"""Stage -> ``{"wall": seconds, "cpu": seconds of this process's CPU time}``."""

#: Condition name -> table label, in table order.
CONDITIONS = {
    "forward": "forward only",
    "teacher_reversals": "+ teacher reversals",
    "teacher_paraphrases": "+ teacher paraphrases (same count)",
    "rule_reversals": "+ rule reversals (ceiling)",
}

#: Few-shot examples for the teacher: invented names and relations the built-in world never
#: uses (two passives, a place, a role), so the teacher is shown *how* to reverse a fact, never
#: an answer. Their order matters to a 135M model: it copies the shape of the last one most, and
#: with the passive role example last it stops writing "B is the writer of A" for "A wrote B".
REVERSE_EXAMPLES: tuple[tuple[dict[str, str], str], ...] = (
    (
        {"text": "Tarvin built Oskelo.", "subject": "Tarvin", "object": "Oskelo"},
        "Oskelo was built by Tarvin.",
    ),
    (
        {"text": "Mirelda lives in Quorth.", "subject": "Mirelda", "object": "Quorth"},
        "Quorth is the town where Mirelda lives.",
    ),
    (
        {"text": "Sela carved Dunmore.", "subject": "Sela", "object": "Dunmore"},
        "Dunmore was carved by Sela.",
    ),
    (
        {"text": "Brannoc is the teacher of Ilsa.", "subject": "Brannoc", "object": "Ilsa"},
        "Ilsa is taught by Brannoc.",
    ),
)
REVERSE_SYSTEM = "Restate the fact starting with the second name. Keep names exactly."
REVERSE_TEMPLATE = "{{ text }}"

#: Few-shot examples for paraphrases: the same invented facts, said again subject first.
PARAPHRASE_EXAMPLES: tuple[tuple[dict[str, str], str], ...] = (
    ({"text": "Tarvin built Oskelo.", "subject": "Tarvin"}, "Tarvin is the builder of Oskelo."),
    (
        {"text": "Mirelda lives in Quorth.", "subject": "Mirelda"},
        "Mirelda makes her home in Quorth.",
    ),
    ({"text": "Sela carved Dunmore.", "subject": "Sela"}, "Sela is the sculptor who made Dunmore."),
    ({"text": "Brannoc is the teacher of Ilsa.", "subject": "Brannoc"}, "Brannoc teaches Ilsa."),
)


class SubjectFirstParaphrase(Paraphrase):
    """``paraphrase`` with the reply prefilled with the fact's subject (as ``reverse`` is with
    its object): a small model then keeps the names and the direction of the fact."""

    optional_roles = ("subject",)
    prefill = "{{ subject or '' }}"
    template = "{{ text }}"
    examples = PARAPHRASE_EXAMPLES
    system = "You paraphrase facts: say the same thing with different words. Keep names exactly."


def probe_reverse(*, seed: int, temperature: float = 0.3, max_new_tokens: int = 24) -> Reverse:
    """The probe's ``reverse`` strategy: a short system prompt, three few-shot turns, the names
    repeated in the user turn, the reply prefilled with the object (the strategy's default)."""
    return Reverse(
        system=REVERSE_SYSTEM,
        examples=REVERSE_EXAMPLES,
        template=REVERSE_TEMPLATE,
        params={
            "seed": seed,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "stop": ["\n"],
        },
    )


def probe_paraphrase(
    *, seed: int, temperature: float = 0.7, max_new_tokens: int = 28
) -> Paraphrase:
    """The probe's ``paraphrase`` strategy: the reply prefilled with the subject."""
    return SubjectFirstParaphrase(
        params={
            "seed": seed,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "stop": ["\n"],
        }
    )


#: Extra sampling rounds for the paraphrase control, so that its count can match the reversals.
PARAPHRASE_EXTRA_ROUNDS = 2


def round_temperature(round_: int) -> float:
    """Sampling temperature of round ``round_``: near-greedy first, more varied on retries."""
    return min(0.3 + 0.3 * round_, 1.0)


# -- result ------------------------------------------------------------------------------


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
            lines.append(
                f"| {c.label} | {c.extra_statements} | {_fmt(c.forward)} | {_fmt(c.reverse)} |"
            )
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
            f"{t['requests']} requests, {t['rounds']} round(s) of sampling. "
            f"Paraphrase control: {p['used']} paraphrases for {p['wanted']} reversals "
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


def _fmt(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    s = _stats(values)
    if len(values) == 1:
        return f"{s['mean']:.1%}"
    return f"{s['mean']:.1%} [{s['min']:.0%}-{s['max']:.0%}]"


# -- the steps ---------------------------------------------------------------------------


def _records(world: World, facts: Sequence[Fact]) -> list[dict[str, str]]:
    return [
        {
            "id": f.id,
            "text": world.statement(f),
            "subject": f.subject,
            "object": f.object,
            "relation": f.relation,
        }
        for f in facts
    ]


def _resolve_teacher(teacher: Teacher | str, world: World) -> tuple[Teacher, str]:
    if not isinstance(teacher, str):
        return teacher, getattr(teacher, "name", type(teacher).__name__)
    if teacher == "rules":
        return rules_teacher(world), "rules"
    from mstudy import plugins

    built: Teacher = plugins.create("teachers", teacher)  # type: ignore[assignment]
    return built, teacher


def _study(
    teacher: Teacher,
    strategy: Reverse | Paraphrase,
    filters: Sequence[Any],
    records: list[dict[str, str]],
    progress: bool,
) -> tuple[list[Example], list[Rejection], int]:
    study = Study(teacher, [strategy], filters=list(filters), progress=progress)
    accepted: list[Example] = []
    rejected: list[Rejection] = []
    for item in study.stream(records):
        if isinstance(item, Example):
            accepted.append(item)
        else:
            rejected.append(item)
    report = study.last_report
    requests = report.strategy(strategy.name).requests if report is not None else 0
    return accepted, rejected, requests


def _library_filter(name: str) -> Any:
    from mstudy import plugins

    return plugins.create("filters", name)


def _count(reasons: dict[str, int], rejected: Sequence[Rejection]) -> None:
    for r in rejected:
        key = f"{r.stage}: {r.reason}"
        reasons[key] = reasons.get(key, 0) + 1


def _reversal_rounds(
    world: World,
    teacher: Teacher,
    *,
    samples: int,
    seed: int,
    progress: bool,
    max_new_tokens: int,
    min_support: int,
) -> tuple[dict[str, Candidate], list[Candidate], dict[str, Any]]:
    """Sample reversals in rounds (a round asks only the facts still without a selected one);
    filter each (``reverse_check``, the swap check, dedup, length); select by consistency."""
    facts = {f.id: f for f in world.facts}
    filters = [
        _library_filter("reverse_check"),
        SwapFilter(entities_by_id(world.facts)),
        ExactDedup(),
        LengthFilter(min_words=3, max_words=40),
    ]
    candidates: list[Candidate] = []
    chosen: dict[str, Candidate] = {}
    dropped: dict[str, str] = {}
    reasons: dict[str, int] = {}
    requests = rounds = 0
    for round_ in range(samples):
        todo = [f for f in world.facts if f.id not in chosen]
        if not todo:
            break
        rounds += 1
        strategy = probe_reverse(
            seed=seed * 1000 + round_,
            temperature=round_temperature(round_),
            max_new_tokens=max_new_tokens,
        )
        _say(progress, f"teacher: reversal round {round_ + 1} of {samples}, {len(todo)} facts")
        accepted, rejected, sent = _study(
            teacher, strategy, filters, _records(world, todo), progress
        )
        requests += sent
        _count(reasons, rejected)
        for ex in accepted:
            fact = facts[ex.source_id]
            candidates.append(Candidate(fact, ex.text, round_, group_key(world, fact)))
        chosen, dropped = select_consistent(candidates, min_support=min_support)
    reasons["selection: inconsistent pattern"] = len(dropped)
    return chosen, candidates, {"requests": requests, "rounds": rounds, "rejections": reasons}


def _paraphrase_rounds(
    world: World,
    teacher: Teacher,
    facts: Sequence[Fact],
    *,
    samples: int,
    seed: int,
    progress: bool,
) -> tuple[dict[str, str], dict[str, Any]]:
    """One accepted paraphrase per fact of ``facts``, sampled in rounds; filtered by
    ``paraphrase_check``, subject-first, dedup and length.

    The control must match the reversals' count, so it gets :data:`PARAPHRASE_EXTRA_ROUNDS`
    more rounds than the reversals (each only for the facts still missing one).
    """
    filters = [
        _library_filter("paraphrase_check"),
        SubjectFirstFilter(entities_by_id(facts)),
        ExactDedup(),
        LengthFilter(min_words=3, max_words=40),
    ]
    chosen: dict[str, str] = {}
    reasons: dict[str, int] = {}
    requests = 0
    rounds = samples + PARAPHRASE_EXTRA_ROUNDS
    for round_ in range(rounds):
        todo = [f for f in facts if f.id not in chosen]
        if not todo:
            break
        strategy = probe_paraphrase(
            seed=seed * 1000 + round_, temperature=min(0.7 + 0.15 * round_, 1.0)
        )
        _say(progress, f"teacher: paraphrase round {round_ + 1}, {len(todo)} facts")
        accepted, rejected, sent = _study(
            teacher, strategy, filters, _records(world, todo), progress
        )
        requests += sent
        _count(reasons, rejected)
        for ex in accepted:
            chosen.setdefault(ex.source_id, ex.text)
    return chosen, {"requests": requests, "rejections": reasons}


def qa_text(question: str, answer: str) -> str:
    """A question-answer training sequence."""
    return f"Q: {question} A: {answer}"


def qa_prompt(question: str) -> str:
    """The prompt the student answers."""
    return f"Q: {question} A:"


def check_no_leak(texts: Sequence[str], questions: Sequence[str]) -> int:
    """Raise LeakError if any question occurs verbatim (normalised) in a training text.

    Returns the number of questions checked.
    """
    wanted = {canonical(q) for q in questions}
    for text in texts:
        padded = f" {canonical(text)} "
        for q in wanted:
            if f" {q} " in padded:
                raise LeakError(
                    f"the scored question {q!r} occurs in the training text {text!r}; the "
                    "student would be tested on what it was told"
                )
    return len(wanted)


def _contains_question(text: str, questions: set[str]) -> bool:
    padded = f" {canonical(text)} "
    return any(f" {q} " in padded for q in questions)


@contextmanager
def _timer(times: Times, key: str) -> Iterator[Callable[[], float]]:
    """Add the block's wall and CPU time to ``times[key]``; yields a wall clock."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield lambda: time.perf_counter() - start
    finally:
        entry = times.setdefault(key, {"wall": 0.0, "cpu": 0.0})
        entry["wall"] += time.perf_counter() - start
        entry["cpu"] += time.process_time() - cpu


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


DEFAULTS: dict[str, Any] = {
    "teacher": "default",
    "facts": 100,
    "relations": 5,
    "seeds": 2,
    "epochs": 80,
    "samples": 2,
}
"""The defaults of :func:`run_probe` and the CLI (sized for < 5 minutes on 2 CPU cores)."""


@dataclass
class StudyOutcome:
    """What the teacher (and the rules) produced for a world, before any student is trained."""

    teacher: str
    reversals: dict[str, Candidate]
    candidates: list[Candidate]
    paraphrases: dict[str, str]
    rule_reversals: dict[str, str]
    teacher_stats: dict[str, Any]
    paraphrase_stats: dict[str, Any]
    times: Times


def study_world(
    world: World,
    teacher: Teacher | str = DEFAULTS["teacher"],
    *,
    samples: int = DEFAULTS["samples"],
    seed: int = 0,
    max_new_tokens: int = 24,
    min_support: int = 2,
    progress: bool = False,
) -> StudyOutcome:
    """Run the world's forward statements through the studies (teacher and rules).

    ``min_support``: how many facts must share a reversal's pattern for it to be selected
    (see :func:`~mstudy.probes.rules.select_consistent`; 1 keeps every filtered reversal).
    """
    times: Times = {}
    _say(progress, f"teacher: loading {teacher!r}")
    with _timer(times, "teacher load"):
        model, teacher_name = _resolve_teacher(teacher, world)
        loader = getattr(model, "load", None)
        if callable(loader):
            loader()
    with _timer(times, "teacher reversals"):
        chosen, candidates, rstats = _reversal_rounds(
            world,
            model,
            samples=samples,
            seed=seed,
            progress=progress,
            max_new_tokens=max_new_tokens,
            min_support=min_support,
        )
    reversed_facts = [f for f in world.facts if f.id in chosen]
    with _timer(times, "teacher paraphrases"):
        paraphrases, pstats = _paraphrase_rounds(
            world, model, reversed_facts, samples=samples, seed=seed, progress=progress
        )
    closer = getattr(model, "close", None)
    if callable(closer) and isinstance(teacher, str):
        closer()  # free the teacher we built before the students train
    with _timer(times, "rule reversals"):
        rule_examples, rule_rejects, _ = _study(
            rules_teacher(world),
            probe_reverse(seed=0),
            [SwapFilter(entities_by_id(world.facts))],
            _records(world, world.facts),
            False,
        )
    by_id = {f.id: f for f in world.facts}
    if rule_rejects or len(rule_examples) != len(world.facts):
        detail = rule_rejects[0].detail if rule_rejects else "missing replies"
        raise ProbeError(
            f"a rule reversal was rejected ({detail}); check the relation spec's inverse templates"
        )
    for example in rule_examples:
        if not world.is_true_reversal(by_id[example.source_id], example.text):
            raise ProbeError(f"a rule reversal fails the world's own check: {example.text!r}")
    n_true = sum(world.is_true_reversal(c.fact, c.text) for c in chosen.values())
    all_true = sum(world.is_true_reversal(c.fact, c.text) for c in candidates)
    teacher_stats: dict[str, Any] = {
        "facts": len(world.facts),
        "facts_with_reversal": len(chosen),
        "true": n_true,
        "yield": len(chosen) / len(world.facts),
        "precision": n_true / len(chosen) if chosen else 0.0,
        "candidates_before_selection": len(candidates),
        "true_before_selection": all_true,
        "precision_before_selection": all_true / len(candidates) if candidates else 0.0,
        "requests": rstats["requests"],
        "rounds": rstats["rounds"],
        "rejections": rstats["rejections"],
        "precision_definition": (
            "an accepted reversal is true when its normalised text (no case, punctuation or "
            "articles) matches one of the relation's inverse forms: object first, subject "
            "after, the relation said the other way round ('*' in a form: 0-4 words)"
        ),
    }
    paraphrase_stats: dict[str, Any] = {
        "wanted": len(chosen),
        "accepted": len(paraphrases),
        "requests": pstats["requests"],
        "rejections": pstats["rejections"],
    }
    return StudyOutcome(
        teacher=teacher_name,
        reversals=chosen,
        candidates=candidates,
        paraphrases=paraphrases,
        rule_reversals={e.source_id: e.text for e in rule_examples},
        teacher_stats=teacher_stats,
        paraphrase_stats=paraphrase_stats,
        times=times,
    )


@dataclass
class StudentData:
    """The student's training texts per condition, and the questions it is scored on."""

    base: list[str]
    extra: dict[str, list[str]]
    prompts: list[str]
    gold: list[set[str]]
    seen_prompts: list[str]
    seen_gold: list[set[str]]
    leak_check: dict[str, Any]
    paraphrases_from_rules: int = 0


def build_student_data(world: World, outcome: StudyOutcome) -> StudentData:
    """Training texts per condition; scored questions held out and checked for leaks.

    Base (every condition): the forward statements, one anchor per entity and the format
    facts' QA pairs in both directions. Extra: the teacher's selected reversals; as many
    paraphrases of the same facts (a fact the teacher could not paraphrase gets its rule
    paraphrase, subject first too, so the counts match exactly); the rule reversals. With
    the ``rules`` teacher the teacher-reversal condition is the ceiling itself and is not
    trained twice.
    """
    scored = world.scored_facts
    questions = [world.forward_question(f) for f in scored]
    questions += [world.reverse_question(f) for f in scored]
    qset = {canonical(q) for q in questions}
    base = [world.statement(f) for f in world.facts] + world.anchor_sentences()
    for f in world.format_facts:
        base.append(qa_text(world.forward_question(f), f.object))
        base.append(qa_text(world.reverse_question(f), f.subject))
    dropped = 0

    def clean(texts: list[str]) -> list[str]:
        nonlocal dropped
        kept = [t for t in texts if not _contains_question(t, qset)]
        dropped += len(texts) - len(kept)
        return kept

    reversed_facts = [f for f in world.facts if f.id in outcome.reversals]
    kept = [f for f in reversed_facts if clean([outcome.reversals[f.id].text])]
    reversals = [outcome.reversals[f.id].text for f in kept]
    paraphrases: list[str] = []
    filled = 0
    for f in kept:  # one paraphrase per reversed fact: the teacher's, else the rule's
        teacher_text = outcome.paraphrases.get(f.id)
        if teacher_text is not None and clean([teacher_text]):
            paraphrases.append(teacher_text)
        else:
            paraphrases.append(world.paraphrase_statement(f))
            filled += 1
    rules = [outcome.rule_reversals[f.id] for f in world.facts]
    extra = {"forward": [], "teacher_reversals": reversals}
    extra["teacher_paraphrases"] = paraphrases
    extra["rule_reversals"] = rules
    if outcome.teacher == "rules":
        del extra["teacher_reversals"]
    texts = [*base, *(t for group in extra.values() for t in group)]
    checked = check_no_leak(texts, questions)
    fmt = world.format_facts
    prompts = [qa_prompt(world.forward_question(f)) for f in scored]
    prompts += [qa_prompt(world.reverse_question(f)) for f in scored]
    for prompt in prompts:
        if any(prompt in t for t in texts):
            raise LeakError(f"the prompt {prompt!r} occurs in the training data")
    return StudentData(
        base=base,
        extra=extra,
        prompts=prompts,
        gold=[world.answers(f, "forward") for f in scored]
        + [world.answers(f, "reverse") for f in scored],
        seen_prompts=[qa_prompt(world.forward_question(f)) for f in fmt]
        + [qa_prompt(world.reverse_question(f)) for f in fmt],
        seen_gold=[world.answers(f, "forward") for f in fmt]
        + [world.answers(f, "reverse") for f in fmt],
        leak_check={
            "questions": checked,
            "training_texts": len(set(texts)),
            "dropped": dropped,
        },
        paraphrases_from_rules=filled,
    )


@dataclass(frozen=True)
class _Job:
    """One student to train and score (picklable, for worker processes)."""

    name: str
    seed: int
    texts: list[str]
    vocab_texts: list[str]
    prompts: list[str]
    config: StudentConfig
    max_len: int


def _run_job(job: _Job, queue: Any = None) -> tuple[list[str], float, float]:
    """Train and score one student; returns (answers, training seconds, CPU seconds).

    Epoch progress goes to ``queue`` (a multiprocessing queue) when given.
    """
    start, cpu = time.perf_counter(), time.process_time()
    tokenizer = WordTokenizer(job.vocab_texts)

    def on_epoch(epoch: int, loss: float) -> None:
        if queue is not None:
            queue.put((job.name, job.seed, loss))

    model = train_student(
        job.texts, tokenizer, job.config, seed=job.seed, max_len=job.max_len, on_epoch=on_epoch
    )
    trained = time.perf_counter() - start
    answers = answer_questions(model, tokenizer, job.prompts, threads=job.config.threads)
    return answers, trained, time.process_time() - cpu


def default_workers() -> int:
    """Students trained at once: one per core (up to 4) where ``fork`` exists, else 1.

    Each student uses one thread, which on a small CPU is 5-10x faster than two; two students
    side by side use both cores of a 2-core machine.
    """
    import multiprocessing
    import os

    if "fork" not in multiprocessing.get_all_start_methods() or sys.platform != "linux":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def train_conditions(
    data: StudentData,
    config: StudentConfig,
    *,
    seeds: int,
    workers: int | None = None,
    progress: bool = False,
    times: Times | None = None,
) -> list[ConditionResult]:
    """Train ``seeds`` fresh students per condition and score each on the held-out questions.

    ``workers`` students train at once in worker processes (default :func:`default_workers`;
    forked, or spawned after this process used CUDA, see :func:`start_method`);
    every student is single-threaded and seeded, so its result does not depend on that.
    """
    times = times if times is not None else {}
    workers = default_workers() if workers is None else max(1, workers)
    everything = [*data.base, *(t for g in data.extra.values() for t in g)]
    vocab_texts = [*everything, *data.prompts, *data.seen_prompts]
    tokenizer = WordTokenizer(vocab_texts)
    longest = max(len(tokenizer.encode(t)) for t in [*everything, *data.prompts])
    max_len = longest + 2 + 8
    prompts = [*data.prompts, *data.seen_prompts]
    jobs = [
        _Job(name, seed, [*data.base, *extra], vocab_texts, prompts, config, max_len)
        for name, extra in data.extra.items()
        for seed in range(seeds)
    ]
    bar = _bar(progress, len(jobs) * config.epochs)
    outputs: dict[tuple[str, int], tuple[list[str], float, float]] = {}
    try:
        with _timer(times, "students (train + score)") as clock:
            if workers == 1 or len(jobs) == 1:
                for job in jobs:
                    if bar is not None:
                        bar.set_description(f"student: {job.name}, seed {job.seed}")
                    queue = _BarQueue(bar)
                    outputs[(job.name, job.seed)] = _run_job(job, queue if bar else None)
            else:
                outputs = _run_parallel(jobs, workers, bar)
            wall = clock()
    finally:
        if bar is not None:
            bar.close()
    if workers > 1 and len(jobs) > 1:  # the children's CPU time, not this process's
        times["students (train + score)"]["cpu"] = sum(o[2] for o in outputs.values())
        times["students (train + score)"]["wall"] = wall
    gold = [*data.gold, *data.seen_gold]
    n, m = len(data.prompts) // 2, len(data.seen_prompts) // 2
    results: list[ConditionResult] = []
    for name, extra in data.extra.items():
        result = ConditionResult(name, CONDITIONS[name], len(extra), len(data.base) + len(extra))
        for seed in range(seeds):
            answers, trained, _ = outputs[(name, seed)]
            result.train_seconds.append(round(trained, 2))
            ok = [_correct(a, g) for a, g in zip(answers, gold, strict=True)]
            result.forward.append(sum(ok[:n]) / n)
            result.reverse.append(sum(ok[n : 2 * n]) / n)
            seen = ok[2 * n :]
            result.seen_forward.append(sum(seen[:m]) / max(m, 1))
            result.seen_reverse.append(sum(seen[m:]) / max(m, 1))
        results.append(result)
    return results


class _BarQueue:
    """A stand-in for a queue that advances the progress bar directly (one process)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def put(self, item: tuple[str, int, float]) -> None:
        self.bar.set_postfix(loss=f"{item[2]:.3f}", refresh=False)
        self.bar.update(1)


def start_method() -> str:
    """How student processes start: ``fork`` (quick), unless this process has used CUDA (a
    teacher on a GPU), which a forked child cannot use or even seed: then ``spawn``."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "spawn"
    return "fork"


def _run_parallel(
    jobs: list[_Job], workers: int, bar: Any
) -> dict[tuple[str, int], tuple[list[str], float, float]]:
    """Run the jobs in ``workers`` processes, relaying epoch progress to ``bar``."""
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import ProcessPoolExecutor, wait

    context = multiprocessing.get_context(start_method())
    outputs: dict[tuple[str, int], tuple[list[str], float, float]] = {}
    with context.Manager() as manager:
        progress_queue = manager.Queue() if bar is not None else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_run_job, job, progress_queue): job for job in jobs}
            pending = set(futures)
            if bar is not None:
                bar.set_description(f"students ({workers} at a time)")
            while pending:
                done, pending = wait(pending, timeout=0.2)
                while progress_queue is not None:
                    try:
                        name, seed, loss = progress_queue.get_nowait()
                    except queue_module.Empty:
                        break
                    bar.set_postfix(last=f"{name}/{seed}", loss=f"{loss:.3f}", refresh=False)
                    bar.update(1)
                for future in done:
                    job = futures[future]
                    outputs[(job.name, job.seed)] = future.result()
    return outputs


def run_probe(
    *,
    teacher: Teacher | str = DEFAULTS["teacher"],
    facts: int = DEFAULTS["facts"],
    relations: int = DEFAULTS["relations"],
    world: World | None = None,
    world_dir: str | Path | None = None,
    world_seed: int = 0,
    seeds: int = DEFAULTS["seeds"],
    epochs: int = DEFAULTS["epochs"],
    samples: int = DEFAULTS["samples"],
    student: StudentConfig | None = None,
    max_new_tokens: int = 24,
    workers: int | None = None,
    progress: bool = False,
) -> ProbeResult:
    """Run the reversal probe and return what it measured.

    Args:
        teacher: ``"default"`` (embedded SmolLM2), ``"rules"`` (teacher-free ceiling), any
            teacher plugin name, or a Teacher object.
        facts, relations, world_seed: size and seed of the generated world (ignored when
            ``world`` or ``world_dir`` is given; ``world_seed`` also splits a loaded world).
        world / world_dir: a ready World, or a folder with ``facts.jsonl`` and
            ``relations.toml``/``.json``.
        seeds: student seeds per condition.
        epochs: student training epochs (overrides ``student.epochs``).
        samples: rounds of teacher sampling; a round asks again only the facts that have no
            selected reversal yet (and, for the control, no paraphrase yet).
        student: student size and training settings.
        max_new_tokens: cap on the length of a teacher reversal.
        workers: students trained at once, each in its own single-threaded process
            (default: one per core, up to 4; 1 trains them one by one in this process).
        progress: show progress (studies and training, with ETA) on stderr.
    """
    if seeds < 1 or epochs < 1 or samples < 1:
        raise ProbeError("seeds, epochs and samples must each be at least 1")
    times: Times = {}
    with _timer(times, "world"):
        if world is None:
            world = (
                load_world(world_dir, seed=world_seed)
                if world_dir is not None
                else generate_world(facts, relations, seed=world_seed)
            )
    config = StudentConfig(**{**(student or StudentConfig()).to_dict(), "epochs": epochs})
    outcome = study_world(
        world,
        teacher,
        samples=samples,
        seed=world_seed,
        max_new_tokens=max_new_tokens,
        progress=progress,
    )
    times.update(outcome.times)
    data = build_student_data(world, outcome)
    conditions = train_conditions(
        data, config, seeds=seeds, workers=workers, progress=progress, times=times
    )
    paraphrases = len(data.extra["teacher_paraphrases"])
    wanted = len(data.extra.get("teacher_reversals", data.extra["rule_reversals"]))
    reversal_rows = [
        {
            "fact": c.fact.id,
            "relation": c.fact.relation,
            "statement": world.statement(c.fact),
            "reversal": c.text,
            "round": c.sample,
            "pattern": c.pattern,
            "selected": outcome.reversals.get(c.fact.id) is c,
            "true": world.is_true_reversal(c.fact, c.text),
        }
        for c in outcome.candidates
    ]
    scored = world.scored_facts
    return ProbeResult(
        teacher=outcome.teacher,
        world={
            "facts": len(world.facts),
            "scored": len(scored),
            "format": len(world.format_facts),
            "relations": len(world.relations),
            "relation_names": sorted(world.relations),
            "entities": len(world.entity_types),
            "source": world.where,
            "seed": world_seed,
        },
        settings={
            "seeds": seeds,
            "epochs": config.epochs,
            "samples": samples,
            "max_new_tokens": max_new_tokens,
            "student": config.to_dict(),
            "student_loss": "every token of every training sequence (plain LM loss)",
            "workers": workers if workers is not None else default_workers(),
        },
        conditions=conditions,
        chance={"forward": world.chance("forward"), "reverse": world.chance("reverse")},
        teacher_stats=outcome.teacher_stats,
        paraphrase_stats={
            **outcome.paraphrase_stats,
            "used": paraphrases,
            "wanted": wanted,
            "from_rules": data.paraphrases_from_rules,
            "note": "the control gets one subject-first paraphrase per fact that got a "
            "reversal (the teacher's; the rule paraphrase where the teacher gave none that "
            "passed the filters), so its count equals the reversals'",
        },
        leak_check=data.leak_check,
        times={k: {t: round(x, 2) for t, x in v.items()} for k, v in times.items()},
        environment=_environment(),
        reversals=reversal_rows,
        world_data=world.to_dict(),
        training_data={
            "base": data.base,
            "extra": data.extra,
            "scored_prompts": data.prompts,
            "scored_gold": [sorted(g) for g in data.gold],
        },
    )


def _correct(answer: str, gold: set[str]) -> bool:
    got = normalize(answer)
    return bool(got) and any(got == normalize(g) for g in gold)


def _bar(progress: bool, total: int) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="epoch", desc="student", dynamic_ncols=True)


def _environment() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch
        import transformers

        info["torch"] = torch.__version__
        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    from mstudy import __version__

    info["mstudy"] = __version__
    return info


# -- outputs -----------------------------------------------------------------------------


def write_outputs(result: ProbeResult, out: str | Path) -> list[Path]:
    """Write ``report.json``, ``table.md``, ``chart.png``, ``reversals.jsonl`` (every teacher
    reversal with its verdicts), ``training_data.json`` (what each student saw, and the
    held-out questions) and ``world.json`` to ``out``; return the paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    report = folder / "report.json"
    report.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    written.append(report)
    table = folder / "table.md"
    table.write_text(result.table() + "\n", encoding="utf-8")
    written.append(table)
    chart = folder / "chart.png"
    chart.write_bytes(render_chart(result))
    written.append(chart)
    rows = folder / "reversals.jsonl"
    rows.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.reversals),
        encoding="utf-8",
    )
    written.append(rows)
    if result.training_data:
        path = folder / "training_data.json"
        path.write_text(json.dumps(result.training_data, indent=1) + "\n", encoding="utf-8")
        written.append(path)
    if result.world_data:
        path = folder / "world.json"
        path.write_text(json.dumps(result.world_data, indent=1) + "\n", encoding="utf-8")
        written.append(path)
    return written
