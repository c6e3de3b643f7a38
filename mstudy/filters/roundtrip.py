"""``round_trip``: a reversal is restated back subject-first and compared with its source.

A reversal of ``A <relation> B`` says the same fact from ``B``. Said back from ``A`` it must
give the source's relation again, with ``A`` in the same role: ``B is the grandchild of A``
restated is ``A is the grandmother of B`` (the source: kept), a swapped ``B is the
grandmother of A`` restated is ``A is the grandchild of B`` (another relation: rejected). This
verifies reversals that share no word with their source (``B works for A`` for ``A employs
B``), which :mod:`~mstudy.filters.roles` can neither confirm nor deny.

A teacher (any, by object or plugin name) restates each reversal, shown only the reversal and
the name to start from, never the source; :func:`restates_source` then compares its reply
with the source, without a model. ``readings`` limits the teacher calls to the reversals whose
``role_check`` reading is among them (default: ``unknown`` and ``ungrounded``, the ones the
role check cannot settle); the others pass untouched. The restatement goes on the row
(``round_trip``). Nothing here looks at any answer key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mstudy.cache import CallCache
from mstudy.filters._asking import ask
from mstudy.filters.roles import FUNCTION_WORDS, relation_words, role_verdict
from mstudy.interfaces import Teacher
from mstudy.records import Completion, Example, GenerationParams, Message, Rejection, Request
from mstudy.text import common_prefix_length, normalize

__all__ = ["ROUND_TRIP_EXAMPLES", "ROUND_TRIP_SYSTEM", "RoundTrip", "restates_source"]

ROUND_TRIP_SYSTEM = "Restate the fact starting with the given name. Keep names exactly."

#: (reversal, name to start from, restatement): invented names and relations.
ROUND_TRIP_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("Oskelo was built by Tarvin.", "Tarvin", "Tarvin built Oskelo."),
    ("Quorth Hale's keeper is Mirelda Vosk.", "Mirelda Vosk", "Mirelda Vosk is the keeper of "
     "Quorth Hale."),
    ("Ilsa is the ward of Brannoc.", "Brannoc", "Brannoc is the guardian of Ilsa."),
    ("Pellith Moor serves under Orvane Tesk.", "Orvane Tesk", "Orvane Tesk commands Pellith "
     "Moor."),
)  # fmt: skip

_READINGS = frozenset(
    ["kept", "swapped", "unknown", "ungrounded", "other relation", "incomplete", "adds a claim",
     "no entities"]
)  # fmt: skip


def _same_word(a: str, b: str) -> bool:
    """One word's forms: equal, or sharing all but at most two letters of the shorter
    (``teaches``/``teacher``, ``employs``/``employer``), never only a compound's first part
    (``grandmother``/``grandchild``)."""
    if a == b:
        return True
    shared = common_prefix_length(a, b)
    return shared >= 4 and shared >= min(len(a), len(b)) - 2


def restates_source(source: str, restated: str, subject: str, obj: str) -> tuple[bool, str]:
    """Whether ``restated`` (subject first) says what ``source`` says: both names in the
    source's order, the source's relation words (each in some form), no other content word,
    and no passive the source lacks. Returns (agrees, why)."""
    if normalize(restated) == normalize(source):
        return True, "the source's own words"
    source_phrase, source_words = relation_words(source, subject, obj)
    phrase, words = relation_words(restated, subject, obj)
    if not phrase:
        return False, "the names are not in the source's order"
    if "by" in phrase and "by" not in source_phrase:
        return False, "a passive: the roles are exchanged"
    missing = [w for w in source_words if not any(_same_word(w, x) for x in words)]
    if missing:
        return False, f"lacks the source's {' '.join(missing)!r}"
    extra = [w for w in words if not any(_same_word(w, x) for x in source_words)]
    extra = [w for w in extra if w not in FUNCTION_WORDS]
    if extra:
        return False, f"says {' '.join(extra)!r}, which the source does not"
    return True, "the source's relation, the roles kept"


class RoundTrip:
    """Keep a reversal only when a teacher, restating it from the source's subject, gives back
    the source's relation with the roles kept (:func:`restates_source`).

    Args:
        teacher: a Teacher object or a teacher plugin name (built on first use).
        strategies: check only these strategies' examples (default ``reverse``).
        field / source_field / subject_field / object_field: where the reversal, its source
            and the two names are on the row; a row without them passes.
        readings: restate only reversals with one of these ``role_check`` readings (default:
            ``unknown`` and ``ungrounded``); empty: every reversal.
        restated_field: where the restatement goes on the row.
        params: generation parameters (default: greedy, 32 new tokens, stop at a newline).
        on_error: ``"reject"`` (default) or ``"keep"`` a reversal the teacher failed on.
        cache: a :class:`~mstudy.cache.CallCache` or a path to one.
    """

    name = "round_trip"
    version = "1"

    def __init__(
        self,
        *,
        teacher: Teacher | str = "default",
        strategies: Sequence[str] = ("reverse",),
        field: str = "text",
        source_field: str = "input",
        subject_field: str = "subject",
        object_field: str = "object",
        readings: Sequence[str] = ("unknown", "ungrounded"),
        restated_field: str = "round_trip",
        params: GenerationParams | Mapping[str, Any] | None = None,
        on_error: str = "reject",
        cache: CallCache | str | Path | None = None,
    ) -> None:
        bad = sorted(set(readings) - _READINGS)
        if bad:
            raise ValueError(
                f"round_trip: unknown reading(s) {bad}; choose from {sorted(_READINGS)}"
            )
        if on_error not in ("reject", "keep"):
            raise ValueError(f"round_trip: on_error must be 'reject' or 'keep', got {on_error!r}")
        if isinstance(teacher, str):
            from mstudy import plugins

            plugins.find("teachers", teacher)  # an unknown name fails here, not mid-run
        self._teacher_spec = teacher
        self._teacher: Teacher | None = None if isinstance(teacher, str) else teacher
        self.strategies = tuple(strategies)
        self.field, self.source_field = field, source_field
        self.subject_field, self.object_field = subject_field, object_field
        self.readings = tuple(readings)
        self.restated_field = restated_field
        if isinstance(params, GenerationParams):
            self.params = params
        else:
            base = {"max_new_tokens": 32, "temperature": 0.0, "stop": ["\n"]}
            self.params = GenerationParams.from_mapping({**base, **dict(params or {})})
        self.on_error = on_error
        self.cache = CallCache(cache) if isinstance(cache, (str, Path)) else cache

    def __repr__(self) -> str:
        return (
            f"RoundTrip(teacher={self._teacher_spec!r}, strategies={self.strategies!r}, "
            f"readings={self.readings!r})"
        )

    @property
    def stage(self) -> str:
        return f"filter:{self.name}"

    @property
    def teacher(self) -> Teacher:
        """The restating teacher (built from its name on first use)."""
        if self._teacher is None:
            from mstudy import plugins

            built = plugins.create("teachers", str(self._teacher_spec))
            assert isinstance(built, Teacher)
            self._teacher = built
        return self._teacher

    def _parts(self, example: Example) -> tuple[str, str, str, str] | None:
        if self.strategies and example.strategy not in self.strategies:
            return None
        values = [
            example.fields.get(k)
            for k in (self.field, self.source_field, self.subject_field, self.object_field)
        ]
        if not all(isinstance(v, str) and v.strip() for v in values):
            return None
        text, source, subject, obj = (str(v) for v in values)
        if self.readings and role_verdict(source, text, subject, obj).reading not in self.readings:
            return None
        return text, source, subject, obj

    def request(self, example: Example, text: str, subject: str) -> Request:
        """The restating request: the reversal and the name to start from, not the source."""
        messages = [Message("system", ROUND_TRIP_SYSTEM)]
        for shown, start, reply in ROUND_TRIP_EXAMPLES:
            messages += [
                Message("user", f"{shown}\nStart with: {start}"),
                Message("assistant", reply),
            ]
        messages.append(Message("user", f"{text}\nStart with: {subject}"))
        return Request(
            tuple(messages),
            self.params,
            prefill=subject,
            source_id=example.source_id,
            strategy=self.name,
            strategy_version=self.version,
            variables={"text": text, "subject": subject},
        )

    def check(self, example: Example) -> Example | Rejection:
        return self.check_many([example])[0]

    def check_many(self, examples: Sequence[Example]) -> list[Example | Rejection]:
        """Restate a batch in one pass through the teacher; verdicts in input order."""
        out: list[Example | Rejection] = list(examples)
        todo: dict[int, tuple[Request, str, str, str]] = {}
        for i, example in enumerate(examples):
            parts = self._parts(example)
            if parts is not None:
                text, source, subject, obj = parts
                todo[i] = (self.request(example, text, subject), source, subject, obj)
        if todo:
            replies = ask(self.teacher, (entry[0] for entry in todo.values()), self.cache)
            for i, (request, source, subject, obj) in todo.items():
                reply = replies.get(request.key)
                out[i] = self._verdict(examples[i], reply, source, subject, obj)
        return out

    def _verdict(
        self, example: Example, reply: Completion | None, source: str, subject: str, obj: str
    ) -> Example | Rejection:
        if reply is None or not reply.ok:
            example.fields[self.restated_field] = None
            why = "the teacher returned nothing" if reply is None else reply.error or "error"
            if self.on_error == "keep":
                return example
            return example.reject(self.stage, "round trip failed", why[:300])
        restated = reply.text.strip()
        example.fields[self.restated_field] = restated
        agrees, why = restates_source(source, restated, subject, obj)
        if agrees:
            return example
        return example.reject(self.stage, "round trip differs", f"{restated[:120]!r}: {why}")
