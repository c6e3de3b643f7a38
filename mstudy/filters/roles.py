"""``role_check``: does a reversal keep who did what to whom? Checked against its own source.

A reversal of ``A <relation> B`` must say the same fact starting from ``B``. The commonest
errors of a small teacher are *systematic*: it swaps the roles ("B is the teacher of A" for
"A teaches B"), or it repeats an invented clause ("B is the place where A is the teacher of").
Agreement across many facts' reversals cannot catch them (many facts share them), so this
filter checks each reversal against its *own* source statement only:

* the relation is read from the source (the words between subject and object, e.g.
  ``teaches``, ``is the mentor of``, ``founded``) and reduced to its content words;
* a word of the reversal is a *form* of the relation when it shares a stem with one of
  those words (``teacher``/``teaches``/``taught`` is not caught, ``mentored``/``mentor`` is);
* the reversal (object first) is then read for who holds the source subject's role:

  - **kept** (the role stays with the subject): the relation in the passive with the
    subject as agent (``B was founded by A``, ``B is the company founded by A``), the
    object's possessive (``B's mentor is A``), a relative clause with the subject doing
    what it did in the source (``B is the city where A was born``, ``B, which A founded``);
  - **swapped** (the object now holds the subject's role: a false statement unless the
    relation is symmetric): the source's own wording with the names exchanged, the object as
    the relation's agent noun (``B is the mentor of A``, ``B is the founder of A``,
    ``B is A's teacher``) or active verb (``B teaches A``, ``B founded A``);
  - **unknown**: neither (``B is the apprentice of A``: true, but nothing in the source
    says what an apprentice is).

* a reversal that ends in a dangling word (``... where A is the teacher of``) or adds words
  after the subject that the source does not contain (``... by A and his brother``) is
  **incomplete** or **adds a claim**.

:func:`role_verdict` gives the reading; :class:`RoleCheck` rejects ``swapped``,
``incomplete`` and ``adds a claim`` and keeps ``kept`` and ``unknown``. Selection code can use
the verdict to prefer reversals whose roles are confirmed. Nothing here calls a model or
looks at any answer key: it reads the example's ``input``, ``subject`` and ``object`` fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mstudy.filters.base import RowFilter
from mstudy.filters.consistency import DEFAULT_SYMMETRIC
from mstudy.records import Example
from mstudy.text import common_prefix_length, normalize

__all__ = ["FUNCTION_WORDS", "RoleCheck", "RoleVerdict", "relation_words", "role_verdict"]

Reading = Literal[
    "kept",
    "swapped",
    "unknown",
    "ungrounded",
    "other relation",
    "incomplete",
    "adds a claim",
    "no entities",
]

# fmt: off
FUNCTION_WORDS = frozenset([
    "a", "an", "the", "is", "was", "are", "were", "be", "been", "being", "am", "of", "in", "on",
    "at", "to", "by", "for", "from", "with", "as", "and", "or", "it", "its", "this", "that",
    "which", "who", "whom", "whose", "where", "when", "has", "have", "had", "s", "one", "also",
    "then", "now", "once", "still", "very", "not", "de", "la",
])
"""Words that carry no relation meaning."""
_AUX = frozenset(["is", "was", "are", "were", "be", "been", "being", "am", "has", "have", "had",
                  "got", "gets", "get"])
_RELATIVE = frozenset(["that", "which", "who", "whom", "where", "when", "whose"])
_DANGLING = frozenset(["of", "to", "by", "for", "from", "with", "in", "on", "at", "the", "a",
                       "an", "is", "was", "are", "were", "and", "or", "that", "which", "who",
                       "whom", "where", "whose", "s", "as", "be", "been", "has", "have"])
_AGENT_ENDINGS = ("er", "or", "ist", "ess", "ant", "ent")
_TAIL_OK = frozenset(["there", "it", "them", "him", "her", "once", "first", "originally"])
# fmt: on


@dataclass(frozen=True)
class RoleVerdict:
    """How a reversal reads against its source: ``reading`` and a short ``why``."""

    reading: Reading
    why: str


# fmt: off
_IRREGULAR = {
    "taught": "teach", "wrote": "write", "written": "write", "writer": "write", "built": "build",
    "made": "make", "bought": "buy", "sold": "sell", "led": "lead", "held": "hold",
    "gave": "give", "given": "give", "took": "take", "taken": "take", "drew": "draw",
    "drawn": "draw", "sang": "sing", "sung": "sing", "brought": "bring", "caught": "catch",
    "fought": "fight", "sought": "seek", "kept": "keep", "won": "win", "born": "bear",
    "borne": "bear", "grew": "grow", "grown": "grow", "knew": "know", "known": "know",
    "chose": "choose", "chosen": "choose", "drove": "drive", "driven": "drive",
    "rode": "ride", "ridden": "ride", "spoke": "speak", "spoken": "speak", "stole": "steal",
    "stolen": "steal", "wove": "weave", "woven": "weave", "fed": "feed", "bred": "breed",
    "met": "meet", "paid": "pay", "told": "tell", "sent": "send", "spent": "spend",
    "lent": "lend", "struck": "strike", "sank": "sink", "sunk": "sink", "flew": "fly",
    "flown": "fly", "dug": "dig", "hung": "hang", "shot": "shoot", "slew": "slay",
    "slain": "slay", "forged": "forge", "forgave": "forgive", "began": "begin",
    "begun": "begin", "ran": "run", "saw": "see", "seen": "see",
}
# fmt: on


def _lemma(word: str) -> str:
    return _IRREGULAR.get(word, word)


def _stem_related(word: str, relation: str) -> bool:
    """Same word or lemma (``taught``/``teach``), or a shared prefix of at least 5 letters (4
    when one word is that short): ``mentored``/``mentor``, ``founder``/``founded``."""
    word, relation = _lemma(word), _lemma(relation)
    if word == relation:
        return True
    shared = common_prefix_length(word, relation)
    need = 4 if min(len(word), len(relation)) <= 5 else 5
    return shared >= need


def _find(words: Sequence[str], name: Sequence[str], start: int = 0) -> int:
    n = len(name)
    for i in range(start, len(words) - n + 1):
        if list(words[i : i + n]) == list(name):
            return i
    return -1


def relation_words(source: str, subject: str, obj: str) -> tuple[list[str], list[str]]:
    """The source's relation as (its words between subject and object plus any after the
    object, its content words). Empty lists when the entities are not found in order."""
    words, s, o = normalize(source).split(), normalize(subject).split(), normalize(obj).split()
    i = _find(words, s) if s else -1
    j = _find(words, o, i + len(s)) if i >= 0 and o else -1
    if i < 0 or j < 0:
        return [], []
    phrase = [*words[i + len(s) : j], *words[j + len(o) :]]
    return phrase, [w for w in phrase if w not in FUNCTION_WORDS]


def _is_form(word: str, content: Sequence[str]) -> bool:
    return any(_stem_related(word, c) for c in content)


def _agentive(
    word: str, content: Sequence[str], phrase: Sequence[str], agents: frozenset[str] = frozenset()
) -> bool:
    """A word naming the doer of the relation: its agent noun (``teacher``, ``founder``, or
    one of ``agents``), or the source's own role noun when it says ``A is the <noun> of B``."""
    if word in agents:
        return True
    if not _is_form(word, content):
        return False
    if word in phrase and "of" in phrase and phrase.index(word) < phrase.index("of"):
        return True  # "A is the mentor of B": mentor is the source subject's role
    return word.endswith(_AGENT_ENDINGS) and word not in phrase


def _active_verb(
    between: Sequence[str], content: Sequence[str], phrase: Sequence[str], agents: frozenset[str]
) -> bool:
    """``<o> [adverb] <verb form> <s>``: the object doing the relation, active voice."""
    if not between or between[-1] in ("by",) or between[0] in _AUX:
        return False
    verbs = [w for w in between if _is_form(w, content)]
    if not verbs:
        return False
    verb = verbs[-1]
    rest = [w for w in between if w != verb]
    return all(w in FUNCTION_WORDS and w not in _AUX for w in rest) and not _agentive(
        verb, content, phrase, agents
    )


def _participle(word: str) -> bool:
    return word.endswith(("ed", "en")) or word in _IRREGULAR


def role_verdict(
    source: str, text: str, subject: str, obj: str, *, agents: Sequence[str] = ()
) -> RoleVerdict:
    """Read ``text`` (a reversal of ``source``: ``subject ... object``) for who holds which
    role; see the module docstring for the readings. ``agents``: more words naming the doer
    of this relation (``author`` for ``wrote``), e.g. from the relation's noun forms."""
    phrase, content = relation_words(source, subject, obj)
    doers = frozenset(normalize(a) for a in agents if normalize(a))
    content = [*content, *doers]
    words = normalize(text).split()
    s, o = normalize(subject).split(), normalize(obj).split()
    io = _find(words, o) if o else -1
    is_ = _find(words, s, io + len(o)) if io >= 0 and s else -1
    if not phrase or io < 0 or is_ < 0:
        return RoleVerdict("no entities", "subject and object not found in order")
    between = words[io + len(o) : is_]
    tail = words[is_ + len(s) :]
    symmetric = any(
        f" {normalize(p)} " in f" {' '.join(phrase)} " for p in DEFAULT_SYMMETRIC if normalize(p)
    )
    if tail and tail[-1] in _DANGLING:
        return RoleVerdict("incomplete", f"ends in {tail[-1]!r} after the subject")
    if not between and not tail:
        return RoleVerdict("incomplete", "nothing between or after the names")
    extra = [w for w in tail if w not in FUNCTION_WORDS and w not in _TAIL_OK]
    foreign = [w for w in extra if not _is_form(w, content)]
    if foreign:
        return RoleVerdict("adds a claim", f"{' '.join(tail)!r} after the subject")
    if not symmetric:
        if between + tail == list(phrase):
            return RoleVerdict("swapped", "the source's wording with the names exchanged")
        agent = [w for w in between if _agentive(w, content, phrase, doers)]
        if agent and not tail:
            last = between[between.index(agent[-1]) + 1 :]
            # "<o> is the mentor of <s>", "<o> is the founder of <s>"
            if (not last or last[0] in ("of", "to", "for")) and between[-1] not in ("is", "was"):
                return RoleVerdict("swapped", f"{obj!r} is called the {agent[-1]!r}")
        if tail and tail[0] == "s" and any(_agentive(w, content, phrase, doers) for w in tail[1:]):
            return RoleVerdict("swapped", f"{obj!r} is called the {tail[-1]!r} of {subject!r}")
        if _active_verb(between, content, phrase, doers) and not tail:
            return RoleVerdict("swapped", f"{obj!r} does what {subject!r} did")
    # -- readings that keep the roles -------------------------------------------------------
    for k, w in enumerate(between[:-1]):
        if _is_form(w, content) and between[k + 1] == "by":
            return RoleVerdict("kept", f"{w!r} by the subject (passive)")
    possessive = len(between) >= 2 and between[-1] in ("is", "was") and between[0] in ("s", "whose")
    if possessive and any(_agentive(w, content, phrase, doers) for w in between[1:-1]):
        return RoleVerdict("kept", "the object's possessive names the subject's role")
    if between and between[-1] in _RELATIVE and any(_is_form(w, content) for w in tail):
        return RoleVerdict("kept", "a relative clause with the subject doing the relation")
    if symmetric and between + tail == list(phrase):
        return RoleVerdict("kept", "a symmetric relation with the names exchanged")
    for k, w in enumerate(between[:-1]):
        if between[k + 1] == "by" and _participle(w) and w not in FUNCTION_WORDS:
            return RoleVerdict(
                "other relation", f"{w!r} by the subject is not the source's relation"
            )
    if any(_is_form(w, content) for w in between + tail):
        return RoleVerdict("unknown", "a form of the relation, roles neither confirmed nor denied")
    return RoleVerdict("ungrounded", "no word of the source's relation; roles unverifiable")


DEFAULT_AGENTS: Mapping[str, Sequence[str]] = {
    "wrote": ["author", "writer"],
    "writes": ["author", "writer"],
    "teaches": ["teacher", "tutor", "instructor"],
    "taught": ["teacher", "tutor", "instructor"],
    "painted": ["painter", "artist"],
    "composed": ["composer"],
    "owns": ["owner"],
    "employs": ["employer", "boss"],
    "directed": ["director"],
    "mentors": ["mentor"],
    "coaches": ["coach", "trainer"],
    "built": ["builder"],
    "invented": ["inventor"],
}
"""Relation word (normalised) -> nouns naming its doer that share no stem with it."""


class RoleCheck(RowFilter):
    """Reject reversals that swap roles, dangle or add a claim, read against their source.

    Reads the ``input`` (source), ``text`` (reversal), ``subject`` and ``object`` fields
    (names configurable) of examples of ``strategies``; an example without them passes
    (``reverse_check`` with ``require_entities`` is the filter that insists on them).
    ``reject`` lists the readings of :func:`role_verdict` that are rejected. ``agents`` maps a
    relation word to nouns naming its doer that share no stem with it (``{"wrote":
    ["author"]}``); they extend :data:`DEFAULT_AGENTS`.
    """

    name = "role_check"

    def __init__(
        self,
        *,
        strategies: Sequence[str] = ("reverse",),
        field: str = "text",
        source_field: str = "input",
        subject_field: str = "subject",
        object_field: str = "object",
        reject: Sequence[str] = ("swapped", "other relation", "incomplete", "adds a claim"),
        agents: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        allowed = {
            "swapped", "other relation", "incomplete", "adds a claim", "unknown", "ungrounded",
            "kept",
        }  # fmt: skip
        bad = sorted(set(reject) - allowed)
        if bad:
            raise ValueError(f"role_check: unknown reading(s) {bad}; choose from {sorted(allowed)}")
        self.strategies = tuple(strategies)
        self.field, self.source_field = field, source_field
        self.subject_field, self.object_field = subject_field, object_field
        self.reject = tuple(reject)
        merged: dict[str, list[str]] = {k: list(v) for k, v in DEFAULT_AGENTS.items()}
        for word, nouns in (agents or {}).items():
            merged.setdefault(normalize(word), []).extend(normalize(n) for n in nouns)
        self.agents = merged

    def agents_for(self, source: str) -> list[str]:
        """The doer nouns of the relation words in ``source``."""
        found: list[str] = []
        for word in normalize(source).split():
            found.extend(self.agents.get(word, ()))
        return found

    def reason(self, example: Example) -> tuple[str, str] | None:
        if self.strategies and example.strategy not in self.strategies:
            return None
        values = [
            example.fields.get(k)
            for k in (self.field, self.source_field, self.subject_field, self.object_field)
        ]
        if not all(isinstance(v, str) and v.strip() for v in values):
            return None
        text, source, subject, obj = (str(v) for v in values)
        verdict = role_verdict(source, text, subject, obj, agents=self.agents_for(source))
        if verdict.reading in self.reject:
            label = "roles swapped" if verdict.reading == "swapped" else verdict.reading
            return (label, f"{text[:120]!r}: {verdict.why}")
        return None
