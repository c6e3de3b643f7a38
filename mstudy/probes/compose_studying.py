"""The teacher's side of the composition probe: chains, composed statements, paraphrases.

:func:`study_compose` first runs the ``rules`` teacher through every strategy and filter (so a
world whose rule texts would be rejected fails before any teacher call), then the chosen
teacher through real :class:`~mstudy.Study` runs, each in rounds (a round asks again only
what has no accepted text yet, at a higher temperature):

* ``cot`` for the format questions: the record is the question with its two supporting facts
  and the gold answer; kept when the library's ``answer_check`` finds the right final answer
  and the chain names the middle entity before the answer (the bridge check);
* ``connect`` for every question: the first fact linked to the fact about its object, with
  few-shot examples built from the world's own templates and invented names; kept when the
  library's ``link_check`` reads it as a role-keeping composition of its *own* two facts (the
  first hop at the subject, neither relation swapped nor dropped, the second fact not merely
  restated, no invented name) and it names the subject first and the answer after it; one
  more round than ``samples`` resamples the ones that fail. Every statement the teacher
  wrote, kept or not, is then graded by the world in three parts: true (a composed form),
  false (the world contradicts it), undecided;
* ``paraphrase`` of as many atomic facts as there are composed statements (the data-size
  control), subject first, checked by ``paraphrase_check``; a fact the teacher could not
  paraphrase gets its rule paraphrase.

No selection step looks at the answer key beyond the record's own fields (its facts and gold
answer, which a ``cot`` study of a QA dataset has); the key measures the teacher afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mstudy.filters import ExactDedup, LengthFilter
from mstudy.filters.links import LinkCheck
from mstudy.interfaces import Teacher
from mstudy.probes.compose_prompts import (
    chain_question,
    connect_examples,
    probe_chain,
    probe_connect,
)
from mstudy.probes.compose_rules import compose_rules_teacher
from mstudy.probes.compose_world import ComposeWorld, TwoHop
from mstudy.probes.errors import ProbeError
from mstudy.probes.progress import Times, say, timer
from mstudy.probes.prompts import probe_paraphrase
from mstudy.probes.rules import SubjectFirstFilter
from mstudy.probes.studying import PARAPHRASE_EXTRA_ROUNDS, round_temperature
from mstudy.probes.templates import canonical
from mstudy.probes.world import Fact
from mstudy.records import Example, Rejection
from mstudy.study import Study

__all__ = ["CONNECT_EXTRA_ROUNDS", "ComposeStudy", "control_facts", "study_compose"]

CONNECT_EXTRA_ROUNDS = 1
"""Connect rounds beyond ``samples``: a statement ``link_check`` rejects is asked again."""


@dataclass
class ComposeStudy:
    """What the studies produced: accepted texts by question id, and how they went."""

    teacher: str
    chains: dict[str, str]
    connected: dict[str, str]
    paraphrases: list[tuple[Fact, str | None]]
    rule_chains: dict[str, str]
    rule_connected: dict[str, str]
    stats: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    times: Times = field(default_factory=dict)


def _library_filter(name: str) -> Any:
    from mstudy import plugins

    return plugins.create("filters", name)


def _run(
    teacher: Teacher,
    strategy: Any,
    filters: Sequence[Any],
    records: list[dict[str, Any]],
    progress: bool,
) -> tuple[list[Example], list[Rejection], int]:
    study = Study(teacher, [strategy], filters=list(filters), progress=progress)
    accepted: list[Example] = []
    rejected: list[Rejection] = []
    for item in study.stream(records):
        (accepted if isinstance(item, Example) else rejected).append(item)  # type: ignore[arg-type]
    report = study.last_report
    requests = report.strategy(strategy.name).requests if report is not None else 0
    return accepted, rejected, requests


def _chain_records(world: ComposeWorld, questions: Sequence[TwoHop]) -> list[dict[str, Any]]:
    return [
        {
            "id": q.id,
            "question": chain_question(world.facts_text(q), world.question_text(q)),
            "answer": q.answer,
            "opening": _opening(world.relations[q.paths[0][0].relation].forward, q.subject),
        }
        for q in questions
    ]


def _opening(forward: str, subject: str) -> str:
    """The first fact's ``forward`` form as far as its subject ("The advisor of Ann Vel" of
    "The advisor of {subject} is {object}."): the chain's prefill, so the teacher restates the
    first fact in the world's own form whether or not it starts with the subject. A world's
    forms name the subject before the object (checked on load), so the prefill never holds
    the middle entity."""
    return forward.split("{subject}", 1)[0] + subject


def _chain_filters(questions: Sequence[TwoHop]) -> list[Any]:
    return [
        _library_filter("answer_check"),
        SubjectFirstFilter({q.id: (q.middle, q.answer) for q in questions}, strategy="cot"),
        LengthFilter(min_words=4, max_words=60),
    ]


def _connect_records(world: ComposeWorld, questions: Sequence[TwoHop]) -> list[dict[str, Any]]:
    return [
        {
            "id": q.id,
            "text": world.statement(q.paths[0][0]),
            "subject": q.subject,
            "middle": q.middle,
            "object": q.answer,
            "composition": q.composition,
        }
        for q in questions
    ]


def _links(world: ComposeWorld, questions: Sequence[TwoHop]) -> dict[str, list[tuple[str, str]]]:
    return {q.id: [(q.paths[0][1].id, world.statement(q.paths[0][1]))] for q in questions}


def _connect_filters(questions: Sequence[TwoHop]) -> list[Any]:
    return [
        LinkCheck(),
        SubjectFirstFilter({q.id: (q.subject, q.answer) for q in questions}, strategy="connect"),
        ExactDedup(),
        LengthFilter(min_words=4, max_words=40),
    ]


def control_facts(world: ComposeWorld, count: int, seed: int) -> dict[str, Fact]:
    """``count`` atomic facts for the paraphrase control (record id -> fact): a seeded shuffle
    of the world's facts, repeated when ``count`` exceeds them."""
    order = world.facts[:]
    random.Random(seed).shuffle(order)
    return {f"p{i:05d}": order[i % len(order)] for i in range(count)}


def _paraphrase_records(world: ComposeWorld, chosen: dict[str, Fact]) -> list[dict[str, Any]]:
    return [
        {"id": rid, "text": world.statement(f), "subject": f.subject, "object": f.object}
        for rid, f in chosen.items()
    ]


def _paraphrase_filters(chosen: dict[str, Fact]) -> list[Any]:
    return [
        _library_filter("paraphrase_check"),
        SubjectFirstFilter({rid: (f.subject, f.object) for rid, f in chosen.items()}),
        ExactDedup(),
        LengthFilter(min_words=3, max_words=40),
    ]


def _count(reasons: dict[str, int], rejected: Sequence[Rejection]) -> None:
    for r in rejected:
        key = f"{r.stage}: {r.reason}"
        reasons[key] = reasons.get(key, 0) + 1


def _rounds(
    kind: str,
    teacher: Teacher,
    make: Any,
    records: list[dict[str, Any]],
    filters: list[Any],
    *,
    rounds: int,
    seed: int,
    progress: bool,
) -> tuple[dict[str, tuple[str, int]], dict[str, Any]]:
    """Ask for each record in rounds until it has an accepted text: id -> (text, round)."""
    accepted: dict[str, tuple[str, int]] = {}
    reasons: dict[str, int] = {}
    requests = used = 0
    written: list[tuple[str, str, str | None]] = []  # (record id, text, why rejected)
    for round_ in range(rounds):
        todo = [r for r in records if r["id"] not in accepted]
        if not todo:
            break
        used += 1
        say(progress, f"teacher: {kind} round {round_ + 1} of {rounds}, {len(todo)} records")
        strategy = make(seed=seed * 1000 + round_, temperature=round_temperature(round_))
        examples, rejected, sent = _run(teacher, strategy, filters, todo, progress)
        requests += sent
        _count(reasons, rejected)
        for ex in examples:
            accepted.setdefault(ex.source_id, (ex.text, round_))
            written.append((ex.source_id, ex.text, None))
        for r in rejected:
            row = r.row or {}
            text = row.get("text", row.get("reply"))  # a filter's row, or a parse reply
            if isinstance(text, str) and text.strip():
                written.append((r.source_id, text, f"{r.stage}: {r.reason}"))
    stats = {"requests": requests, "rounds": used, "rejections": reasons, "written": written}
    return accepted, stats


def _rule_texts(
    world: ComposeWorld, kind: str, make: Any, records: list[dict[str, Any]], filters: list[Any]
) -> dict[str, str]:
    teacher = compose_rules_teacher(world)
    examples, rejected, _ = _run(teacher, make(seed=0), filters, records, False)
    if rejected or len(examples) != len(records):
        detail = (
            f"{rejected[0].source_id}: {rejected[0].reason} ({rejected[0].detail})"
            if (rejected)
            else "missing replies"
        )
        raise ProbeError(
            f"a rule {kind} was rejected by the probe's own filters: {detail}; "
            "check the world's templates"
        )
    return {ex.source_id: ex.text for ex in examples}


def _resolve(teacher: Teacher | str, world: ComposeWorld) -> tuple[Teacher, str]:
    if not isinstance(teacher, str):
        return teacher, getattr(teacher, "name", type(teacher).__name__)
    if teacher == "rules":
        return compose_rules_teacher(world), "rules"
    from mstudy import plugins

    built: Teacher = plugins.create("teachers", teacher)  # type: ignore[assignment]
    return built, teacher


def study_compose(
    world: ComposeWorld,
    teacher: Teacher | str,
    *,
    samples: int = 2,
    seed: int = 0,
    progress: bool = False,
) -> ComposeStudy:
    """Rule texts for every question (checked first), then the teacher's chains for the
    format questions, composed statements for all, and the paraphrase control."""
    times: Times = {}
    fmt, every = world.format_questions, world.questions
    shots = connect_examples(world)
    with timer(times, "rule texts"):
        rule_chains = _rule_texts(
            world, "chain", probe_chain, _chain_records(world, every), _chain_filters(every)
        )
        links = _links(world, every)
        rule_connected = _rule_texts(
            world,
            "composed statement",
            lambda **kw: probe_connect(links, shots=shots, **kw),
            _connect_records(world, every),
            _connect_filters(every),
        )
    say(progress, f"teacher: loading {teacher!r}")
    with timer(times, "teacher load"):
        model, name = _resolve(teacher, world)
        loader = getattr(model, "load", None)
        if callable(loader):
            loader()
    if name == "rules":  # the teacher's texts are the rule texts: not asked twice
        none: dict[str, Any] = {"requests": 0, "rounds": 0, "rejections": {}}
        chains = {q.id: (rule_chains[q.id], 0) for q in fmt}
        connected = {k: (v, 0) for k, v in rule_connected.items()}
        chain_stats, connect_stats = dict(none), dict(none)
    else:
        with timer(times, "teacher chains"):
            chains, chain_stats = _rounds(
                "chain",
                model,
                probe_chain,
                _chain_records(world, fmt),
                _chain_filters(fmt),
                rounds=samples,
                seed=seed,
                progress=progress,
            )
        with timer(times, "teacher connect"):
            connected, connect_stats = _rounds(
                "connect",
                model,
                lambda **kw: probe_connect(links, shots=shots, **kw),
                _connect_records(world, every),
                _connect_filters(every),
                rounds=samples + CONNECT_EXTRA_ROUNDS,
                seed=seed,
                progress=progress,
            )
    wanted = len(rule_connected) if name == "rules" else len(connected)
    chosen = control_facts(world, wanted, seed)
    with timer(times, "teacher paraphrases"):
        paraphrased, para_stats = _rounds(
            "paraphrase",
            model,
            probe_paraphrase,
            _paraphrase_records(world, chosen),
            _paraphrase_filters(chosen),
            rounds=samples + PARAPHRASE_EXTRA_ROUNDS,
            seed=seed,
            progress=progress,
        )
    closer = getattr(model, "close", None)
    if callable(closer) and isinstance(teacher, str):
        closer()  # free the teacher we built before the students train
    questions = {q.id: q for q in every}
    rows: list[dict[str, Any]] = []
    for qid, (text, round_) in chains.items():
        q = questions[qid]
        first, second = q.paths[0]
        rows.append(
            {
                "kind": "chain",
                "question": qid,
                "text": text,
                "round": round_,
                "restates_facts": _restates(
                    text, [world.statement(first), world.statement(second)]
                ),
            }
        )
    for qid, (text, round_) in connected.items():
        verdict = world.composed_verdict(questions[qid], text)
        rows.append(
            {
                "kind": "connect",
                "question": qid,
                "text": text,
                "round": round_,
                "verdict": verdict,
                "true": verdict == "true",
            }
        )
    written = connect_stats.pop("written", None)
    if written is None:  # the rules teacher: its statements are the accepted ones
        written = [(qid, text, None) for qid, (text, _) in connected.items()]
    every_verdict = {"true": 0, "false": 0, "undecided": 0}
    for qid, text, why in written:
        verdict = world.composed_verdict(questions[qid], text)
        every_verdict[verdict] += 1
        if why is not None:
            rows.append(
                {
                    "kind": "connect rejected",
                    "question": qid,
                    "text": text,
                    "why": why,
                    "verdict": verdict,
                }
            )
    selected = {"true": 0, "false": 0, "undecided": 0}
    for r in rows:
        if r["kind"] == "connect":
            selected[r["verdict"]] += 1
    chain_stats.pop("written", None)
    para_stats.pop("written", None)
    restated = sum(bool(r.get("restates_facts")) for r in rows)
    true = selected["true"]
    stats = {
        "chains": {
            "questions": len(fmt),
            "accepted": len(chains),
            "yield": len(chains) / len(fmt) if fmt else 0.0,
            "restate_both_facts": restated,
            **chain_stats,
        },
        "connect": {
            "questions": len(every),
            "accepted": len(connected),
            "yield": len(connected) / len(every),
            "true": true,
            "precision": true / len(connected) if connected else 0.0,
            "selected": selected,
            "all_written": every_verdict,
            **connect_stats,
        },
        "paraphrases": {"wanted": len(chosen), "accepted": len(paraphrased), **para_stats},
        "definitions": {
            "chain accepted": "answer_check found the gold final answer and the chain names "
            "the middle entity before the answer",
            "restate_both_facts": "the chain contains both supporting facts as stated (normalised)",
            "connect true": "the statement matches one of the composition's composed forms "
            "(normalised, articles dropped, '*' = 0-4 words)",
            "connect false": "the statement names an entity outside the question's chain, says "
            "the subject's own second-relation fact holds the answer, or states the first "
            "relation the other way round",
            "connect undecided": "neither true nor false by the world's forms",
            "all_written": "every statement the teacher wrote, kept by the filters or not",
        },
    }
    return ComposeStudy(
        teacher=name,
        chains={k: v[0] for k, v in chains.items()},
        connected={k: v[0] for k, v in connected.items()},
        paraphrases=[
            (f, paraphrased[rid][0] if rid in paraphrased else None) for rid, f in chosen.items()
        ],
        rule_chains=rule_chains,
        rule_connected=rule_connected,
        stats=stats,
        rows=rows,
        times=times,
    )


def _restates(text: str, statements: Sequence[str]) -> bool:
    got = f" {canonical(text)} "
    return all(f" {canonical(s)} " in got for s in statements)
