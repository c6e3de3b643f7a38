"""Rule-based pieces of the reversal probe: the ``rules`` teacher, two filters, a selection.

* :func:`rules_teacher`: a :class:`~mstudy.teachers.scripted.ScriptedTeacher` that answers the
  ``reverse`` strategy with the relation's inverse template and ``paraphrase`` with a
  subject-first rewording. It runs through the same :class:`~mstudy.Study` as a model teacher
  and gives the ceiling condition.
* :class:`SwapFilter`: rejects a "reversal" that only swaps the two names and keeps the
  source's wording ("B is the mentor of A" for "A is the mentor of B"): the commonest mistake
  of a small teacher, and a false statement.
* :class:`SubjectFirstFilter`: keeps a paraphrase only when it names both entities, subject
  first, so that the paraphrase control cannot smuggle in reversals.
* :func:`select_consistent`: the previous selection, self-consistency across the dataset (a
  fact keeps the candidate whose pattern most facts of its group share). It removes one-off
  noise but amplifies a teacher's systematic errors, so the probe now selects with
  :func:`~mstudy.probes.selection.select_verified`; this one stays for comparison (the
  noise-curve benchmark reports what it would have selected).

None of these look at the world's answer key (the inverse forms); only the probe's precision
measurement does.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mstudy._hashing import stable_hash
from mstudy.probes.templates import canonical
from mstudy.probes.world import Fact, World
from mstudy.records import Example, Rejection, Request
from mstudy.teachers.scripted import ScriptedTeacher

__all__ = [
    "Candidate",
    "RulesTeacher",
    "SubjectFirstFilter",
    "SwapFilter",
    "entities_by_id",
    "group_key",
    "pattern",
    "rules_teacher",
    "select_consistent",
]

_S, _O = "\x01s\x01", "\x01o\x01"


class RulesTeacher(ScriptedTeacher):
    """A :class:`ScriptedTeacher` that writes whole statements from the world's templates.

    The probe sends it requests without a prefill: a template need not start with a name
    (``The company {object} was founded by {subject}.``), and a prefill would be glued in
    front of it.
    """


def rules_teacher(world: World) -> RulesTeacher:
    """A teacher-free teacher: reversals from inverse templates, paraphrases from the spec."""
    by_pair = {(f.subject, f.object): f for f in world.facts}
    by_text = {world.statement(f): f for f in world.facts}

    def reply(request: Request) -> str:
        variables = request.variables
        fact = by_pair.get((str(variables.get("subject")), str(variables.get("object"))))
        if fact is None:
            fact = by_text.get(str(variables.get("text")))
        if fact is None:
            raise KeyError("the rules teacher only knows the probe world's facts")
        if request.strategy == "reverse":
            return world.inverse_statement(fact)
        if request.strategy == "paraphrase":
            return world.paraphrase_statement(fact, request.sample)
        raise KeyError(f"the rules teacher has no rule for strategy {request.strategy!r}")

    relations = {name: r.to_dict() for name, r in world.relations.items()}
    return RulesTeacher(reply, fingerprint=stable_hash(["probe-rules", relations]))


def _abstract(text: str, subject: str, obj: str) -> str:
    """Canonical text with the two entity names replaced by markers (first occurrences)."""
    out = f" {canonical(text)} "
    for name, marker in ((canonical(obj), _O), (canonical(subject), _S)):
        if name:
            out = out.replace(f" {name} ", f" {marker} ", 1)
    return " ".join(out.split())


def pattern(text: str, subject: str, obj: str) -> str:
    """The reversal's pattern: the two words before the subject and all after it.

    ``"Ostrel is the company founded by Dravik."`` and ``"Ostrel was founded by Dravik."``
    share the pattern ``"founded by <s>"``. Empty when the subject is not found.
    """
    words = _abstract(text, subject, obj).split()
    if _S not in words:
        return ""
    at = words.index(_S)
    return " ".join([*words[max(0, at - 2) : at], "<s>", *words[at + 1 :]])


class _EntityFilter:
    """A filter of one strategy's examples that needs each source fact's two entities."""

    name = ""
    default_strategy = ""

    def __init__(
        self, entities: Mapping[str, tuple[str, str]], *, strategy: str | None = None
    ) -> None:
        self.entities = dict(entities)
        self.strategy = strategy or self.default_strategy

    def check(self, example: Example) -> Example | Rejection:
        if example.strategy != self.strategy or example.source_id not in self.entities:
            return example
        subject, obj = self.entities[example.source_id]
        return self.judge(example, subject, obj)

    def judge(self, example: Example, subject: str, obj: str) -> Example | Rejection:
        raise NotImplementedError


class SwapFilter(_EntityFilter):
    """Reject reversals that keep the source's wording and only exchange the two names.

    Args:
        entities: source record id -> (subject, object).
        strategy: the strategy whose examples are checked (others pass).
    """

    name = "no-swap"
    default_strategy = "reverse"

    def judge(self, example: Example, subject: str, obj: str) -> Example | Rejection:
        source = example.fields.get("input")
        if not isinstance(source, str):
            return example
        swapped = _abstract(source, subject, obj).replace(_S, "\x02").replace(_O, _S)
        swapped = swapped.replace("\x02", _O)
        if _abstract(example.text, subject, obj) == swapped:
            return example.reject(
                f"filter:{self.name}",
                "names swapped",
                f"{example.text[:120]!r} only exchanges {subject!r} and {obj!r}",
            )
        return example


class SubjectFirstFilter(_EntityFilter):
    """Keep a paraphrase only if it names subject and object, subject first.

    Args:
        entities: source record id -> (subject, object).
        strategy: the strategy whose examples are checked (others pass).
    """

    name = "subject-first"
    default_strategy = "paraphrase"

    def judge(self, example: Example, subject: str, obj: str) -> Example | Rejection:
        words = _abstract(example.text, subject, obj).split()
        if _S not in words or _O not in words:
            return example.reject(
                f"filter:{self.name}", "entity missing", f"{example.text[:120]!r}"
            )
        if words.index(_O) < words.index(_S):
            return example.reject(
                f"filter:{self.name}",
                "object first",
                f"{example.text[:120]!r} names {obj!r} before {subject!r} (a reversal)",
            )
        return example


@dataclass(frozen=True)
class Candidate:
    """One accepted reversal of one fact, before selection."""

    fact: Fact
    text: str
    sample: int
    group: str
    check: str = "unknown"
    """The role check's reading against the source (``role_check``): kept, unknown, ..."""
    rejected: str | None = None
    """Why a filter rejected it (``stage: reason``); None for a candidate that passed."""

    @property
    def pattern(self) -> str:
        return pattern(self.text, self.fact.subject, self.fact.object)


def select_consistent(
    candidates: Iterable[Candidate], *, min_support: int = 2
) -> tuple[dict[str, Candidate], dict[str, str]]:
    """Keep at most one reversal per fact: the one whose pattern most facts of its group share.

    ``group`` is the source statement's own pattern (its wording with names abstracted), so
    facts worded alike vote together. A pattern needs ``min_support`` facts (or all the facts
    of a smaller group) behind it. Returns (fact id -> chosen candidate, fact id -> why none
    was chosen).
    """
    by_fact: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_fact[candidate.fact.id].append(candidate)
    support: dict[str, Counter[str]] = defaultdict(Counter)
    group_size: Counter[str] = Counter()
    for items in by_fact.values():
        group = items[0].group
        group_size[group] += 1
        for key in {c.pattern for c in items if c.pattern}:
            support[group][key] += 1
    chosen: dict[str, Candidate] = {}
    dropped: dict[str, str] = {}
    for fact_id, items in by_fact.items():
        group = items[0].group
        need = min(min_support, group_size[group])
        best = max(items, key=lambda c: (support[group][c.pattern] if c.pattern else 0, -c.sample))
        votes = support[group][best.pattern] if best.pattern else 0
        if votes >= need:
            chosen[fact_id] = best
        else:
            dropped[fact_id] = (
                f"pattern {best.pattern!r} shared by {votes} fact(s), fewer than {need}"
            )
    return chosen, dropped


def group_key(world: World, fact: Fact) -> str:
    """The selection group of a fact: its forward statement's wording, names abstracted."""
    return _abstract(world.statement(fact), fact.subject, fact.object)


def entities_by_id(facts: Sequence[Fact]) -> dict[str, tuple[str, str]]:
    """Fact id -> (subject, object), for the filters."""
    return {f.id: (f.subject, f.object) for f in facts}
