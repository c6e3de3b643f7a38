"""``link_check``: does a statement composed from two facts keep who did what to whom?

``connect`` (or any strategy) composes two facts that chain, ``S <r1> M`` and ``M <r2> O``
(``A's mentor is B.``, ``B lives in C.``), into one statement about ``S`` and ``O``
(``A's mentor lives in C; that mentor is B.``). A small teacher's commonest errors keep the
names and break the roles: it drops the first hop (``A lives in C.``: a claim about A's own
home), gives the first relation to the wrong person (``B's mentor A lives in C.``), names the
answer first, or just restates the second fact (``A's mentor is B and B lives in C.``: true,
but nothing is composed). This filter reads each statement against its **own** two source
facts only, with no model and no answer key:

* **missing entity**: ``S`` or ``O`` (or ``M`` with ``require_middle``) is not named;
* **object before subject**: ``O`` comes before ``S``;
* **first hop dropped**: no form of the first relation's content words (``mentor``) is next
  to ``S`` (within ``window`` words), where the first fact has it;
* **roles swapped**: the first fact's wording around ``S`` is found around ``M`` instead
  (``B's mentor``), or the relation word governs ``M`` where the source has no such phrase
  (``A is the mentor of B``);
* **second relation missing**: no form of the second relation's content words (``lives``)
  between ``S`` and ``O``;
* **restates the second fact**: ``M`` directly followed by the second fact's wording and
  ``O`` (the object is read off the middle entity, as in the source): nothing is composed;
* **adds a name**: a capitalised word that is neither in the sources nor the first word of
  a sentence (an invented entity).

A word is a *form* of a relation word when they share a stem (a common prefix of 5 letters,
4 when either word is that short): ``lives``/``lived``, ``mentor``/``mentored``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mstudy.filters.base import RowFilter
from mstudy.filters.roles import FUNCTION_WORDS
from mstudy.records import Example
from mstudy.text import common_prefix_length, normalize

__all__ = ["LinkCheck", "link_problem"]

_CAPITAL = re.compile(r"(?<![.!?:;]\s)(?<!^)\b([A-Z][\w-]*)")


def _stem(word: str, other: str) -> bool:
    if word == other:
        return True
    shared = common_prefix_length(word, other)
    return shared >= (4 if min(len(word), len(other)) <= 5 else 5)


def _content(fact: str, names: Sequence[str]) -> list[str]:
    """A fact's relation words: its words less the entities' and function words."""
    drop = set(normalize(" ".join(names)).split()) | FUNCTION_WORDS
    return [w for w in normalize(fact).split() if w not in drop]


def _find(words: Sequence[str], name: Sequence[str], start: int = 0) -> int:
    n = len(name)
    for i in range(start, len(words) - n + 1):
        if list(words[i : i + n]) == list(name):
            return i
    return -1


def _window(words: Sequence[str], at: int, size: int, width: int) -> list[str]:
    return [*words[max(0, at - width) : at], *words[at + size : at + size + width]]


def _role_phrase(source: Sequence[str], at: int, size: int, content: Sequence[str]) -> list[str]:
    """The source's words from the entity up to its nearest relation word (either side)."""
    after = [k for k in range(at + size, len(source)) if source[k] in content]
    if after and after[0] - (at + size) <= 3:
        return list(source[at + size : after[0] + 1])
    before = [k for k in range(at) if source[k] in content]
    if before and at - before[-1] <= 3:
        return ["", *source[before[-1] : at]]  # "" marks a phrase before the entity
    return []


def _has_phrase(words: Sequence[str], at: int, size: int, phrase: Sequence[str]) -> bool:
    if not phrase:
        return False
    if phrase[0] == "":
        tail = list(phrase[1:])
        return at >= len(tail) and list(words[at - len(tail) : at]) == tail
    return list(words[at + size : at + size + len(phrase)]) == list(phrase)


def link_problem(
    text: str,
    first: str,
    second: str,
    subject: str,
    middle: str,
    obj: str,
    *,
    require_middle: bool = False,
    window: int = 3,
) -> tuple[str, str] | None:
    """Why ``text`` is not a role-keeping composition of ``first`` (``subject ... middle``)
    and ``second`` (``middle ... obj``): a (reason, detail) pair, or None when it is."""
    words = normalize(text).split()
    s, m, o = (normalize(x).split() for x in (subject, middle, obj))
    i_s = _find(words, s)
    i_o = _find(words, o)
    if i_s < 0 or i_o < 0 or (require_middle and _find(words, m) < 0):
        return "missing entity", f"{text[:120]!r} must name {subject!r}, {obj!r}" + (
            f" and {middle!r}" if require_middle else ""
        )
    if i_o < i_s:
        later = _find(words, o, i_s + len(s))
        if later < 0:
            return "object before subject", f"{text[:120]!r} names {obj!r} before {subject!r}"
        i_o = later
    first_content = _content(first, (subject, middle))
    second_content = _content(second, (middle, obj))
    source = normalize(first).split()
    if not first_content or not second_content or _find(source, s) < 0:
        return None  # a source fact has no relation words or lacks its subject: nothing to read
    phrase = _role_phrase(source, _find(source, s), len(s), first_content)
    i_m = _find(words, m)
    swapped = (
        i_m >= 0
        and _has_phrase(words, i_m, len(m), phrase)
        and not _has_phrase(words, i_s, len(s), phrase)
    )
    for k in range(len(words) - 1):  # "<relation word> of M": M now takes S's place
        if (
            words[k + 1] == "of"
            and _find(words, m, k + 2) == k + 2
            and any(_stem(words[k], c) for c in first_content)
            and _find(source, [words[k], "of", *m]) < 0
        ):
            swapped = True
    if swapped:
        return "roles swapped", f"{text[:120]!r}: {middle!r} holds {subject!r}'s role"
    near = _window(words, i_s, len(s), window)
    if not any(_stem(w, c) for w in near for c in first_content):
        return "first hop dropped", (
            f"{text[:120]!r}: no {'/'.join(first_content)!r} next to {subject!r}"
        )
    if not any(_stem(w, c) for w in words[i_s + len(s) : i_o] for c in second_content):
        return "second relation missing", (
            f"{text[:120]!r}: no {'/'.join(second_content)!r} between {subject!r} and {obj!r}"
        )
    if _find(words, normalize(second).split()) >= 0:
        return "restates the second fact", f"{text[:120]!r} contains {second!r}: nothing composed"
    known = set(normalize(f"{first} {second} {subject} {middle} {obj}").split())
    for match in _CAPITAL.finditer(text.strip()):
        name = normalize(match.group(1))
        if name and name not in known and name not in FUNCTION_WORDS:
            return "adds a name", f"{text[:120]!r}: {match.group(1)!r} is in neither fact"
    return None


class LinkCheck(RowFilter):
    """Reject composed statements that drop a hop, swap roles, restate a source fact or add
    a name, read against their own two source facts (see the module docstring).

    Args:
        field: the statement. first_field / second_field: the two facts, ``subject ...
            middle`` and ``middle ... object``. subject_field / middle_field / object_field:
            the three entities. Examples without these fields pass unchecked.
        require_middle: the statement must also name the middle entity.
        window: how close (in words) the first relation must be to the subject.
        strategies: only examples of these strategies are checked (default ``connect``).
    """

    name = "link_check"

    def __init__(
        self,
        *,
        field: str = "text",
        first_field: str = "input",
        second_field: str = "second",
        subject_field: str = "subject",
        middle_field: str = "middle",
        object_field: str = "object",
        require_middle: bool = False,
        window: int = 3,
        strategies: Sequence[str] = ("connect",),
    ) -> None:
        if window < 1:
            raise ValueError(f"link_check: window must be at least 1, got {window}")
        self.field, self.first_field, self.second_field = field, first_field, second_field
        self.subject_field, self.middle_field = subject_field, middle_field
        self.object_field = object_field
        self.require_middle, self.window = require_middle, window
        self.strategies = tuple(strategies)

    def reason(self, example: Example) -> tuple[str, str] | None:
        if self.strategies and example.strategy not in self.strategies:
            return None
        keys = (
            self.field,
            self.first_field,
            self.second_field,
            self.subject_field,
            self.middle_field,
            self.object_field,
        )
        values = [example.fields.get(k) for k in keys]
        if not all(isinstance(v, str) and v.strip() for v in values):
            return None
        text, first, second, subject, middle, obj = (str(v) for v in values)
        return link_problem(
            text,
            first,
            second,
            subject,
            middle,
            obj,
            require_middle=self.require_middle,
            window=self.window,
        )
