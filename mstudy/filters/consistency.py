"""Consistency filters: does an example say what its strategy promised, and nothing else?

* ``reverse_check``: a reversed fact names both entities, starts from the object, is not a
  copy, and rewrites the relation (``A is the father of B`` must not become ``B is the father
  of A``, which inverts the fact); the relation rules are configurable.
* ``paraphrase_check``: a paraphrase keeps the source's names and numbers, adds no numbers,
  and is not a near-copy of the source.
* ``refusal``: refusals and assistant boilerplate ("As an AI...", "I hope this helps!").

All three are cheap string checks on one example at a time; none calls a model.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction

from mstudy.filters.base import RowFilter
from mstudy.records import Example
from mstudy.strategies.reverse import reversal_problem
from mstudy.text import is_refusal, normalize

__all__ = [
    "DEFAULT_BOILERPLATE",
    "DEFAULT_RELATION_RULES",
    "DEFAULT_SYMMETRIC",
    "ParaphraseCheck",
    "RefusalFilter",
    "ReverseCheck",
    "entities",
    "numbers",
]

_CHILD = ["child of", "son of", "daughter of", "s son", "s daughter", "s child", "has a son",
          "has a daughter", "has a child"]  # fmt: skip
_PARENT = ["parent of", "father of", "mother of", "s father", "s mother", "s parent",
           "father is", "mother is", "parent is", "has a father", "has a mother"]  # fmt: skip

DEFAULT_RELATION_RULES: Mapping[str, Sequence[str]] = {
    "father of": [*_CHILD, "father is", "s father", "has a father", "whose father"],
    "mother of": [*_CHILD, "mother is", "s mother", "has a mother", "whose mother"],
    "parent of": [*_CHILD, "parent is", "s parent", "whose parent"],
    "son of": [*_PARENT, "son is", "whose son"],
    "daughter of": [*_PARENT, "daughter is", "whose daughter"],
    "child of": [*_PARENT, "child is", "whose child"],
    "wrote": ["written by", "author", "authored by", "was written"],
    "discovered": ["discovered by", "was discovered", "discoverer"],
    "invented": ["invented by", "was invented", "inventor"],
    "founded": ["founded by", "was founded", "founder"],
    "painted": ["painted by", "was painted", "painter"],
    "composed": ["composed by", "was composed", "composer"],
    "directed": ["directed by", "was directed", "director"],
    "designed": ["designed by", "was designed", "designer"],
    "owns": ["owned by", "owner", "belongs to"],
    "employs": ["employed by", "works for", "employer", "works at"],
    "works for": ["employs", "employer", "employed"],
    "capital of": ["capital is", "s capital", "has the capital", "capital city is"],
}
"""Forward relation phrase -> phrases one of which a reversal must contain (normalised)."""

DEFAULT_SYMMETRIC: Sequence[str] = (
    "married to", "spouse of", "sibling of", "brother or sister", "twin of", "cousin of",
    "friend of", "friends with", "neighbour of", "neighbor of", "colleague of", "partner of",
    "borders", "next to", "same as", "equal to", "equivalent to", "similar to", "related to",
)  # fmt: skip
"""Relations that read the same both ways: swapping the entities is a valid reversal."""

DEFAULT_BOILERPLATE: Sequence[str] = (
    r"\bas an? (?:ai|artificial intelligence)\b",
    r"\bas an? (?:large )?language model\b",
    r"\bi(?:'m| am) (?:just )?an? (?:ai|language model|assistant)\b",
    r"\bi (?:do not|don't) have (?:personal|access|the ability)\b",
    r"\bmy (?:knowledge )?(?:cut-?off|training data)\b",
    r"^\s*(?:sure|certainly|of course|absolutely|great question)\s*[!,.:]",
    r"^\s*here(?:'s| is| are) (?:a|an|the|your|my|some)\b[^.\n]{0,60}"
    r"(?:paraphrase|version|explanation|solution|answer|sentence|statement|restatement|"
    r"rewrite|rephrasing|fact)",
    r"\bi hope (?:this|that) helps\b",
    r"\blet me know if\b",
    r"\bfeel free to\b",
    r"\b(?:happy|glad) to help\b",
    r"\bi'?d be (?:happy|glad) to\b",
)
"""Regular expressions (case-insensitive) for assistant boilerplate."""

_REFUSAL_EXTRA = re.compile(
    r"\bi (?:cannot|can't|can not|won't|will not|am unable to|am not able to) "
    r"(?:help|assist|provide|comply|do that|answer|fulfil|fulfill)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+")
_CAPITALISED = re.compile(r"(?<![\w'’])([^\W\d_][\w'’-]*)")
_NUMBER = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)*")  # digits next to letters count (CJK)
_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_TENS = "thirty forty fifty sixty seventy eighty ninety"
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_UNITS.split())}
_NUMBER_WORDS.update({w: str(10 * i) for i, w in enumerate(_TENS.split(), 3)})
_NUMBER_WORDS.update({"hundred": "100", "thousand": "1000", "million": "1000000"})


def _applies(example: Example, strategies: Sequence[str]) -> bool:
    return not strategies or example.strategy in strategies


def _field(example: Example, name: str) -> str | None:
    value = example.fields.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _phrase_in(phrase: str, normalised_text: str) -> bool:
    """Whether the normalised ``phrase`` occurs as whole words in normalised text."""
    return bool(phrase) and f" {phrase} " in f" {normalised_text} "


def _between(text: str, first: str, second: str) -> str | None:
    """The normalised words between ``first`` and ``second`` in ``text`` (None if absent)."""
    norm, a, b = f" {normalize(text)} ", normalize(first), normalize(second)
    if not a or not b:
        return None
    i = norm.find(f" {a} ")
    if i < 0:
        return None
    start = i + len(a) + 2
    j = norm.find(f" {b} ", start - 1)
    if j < 0:
        return None
    return norm[start : j + 1].strip()


class ReverseCheck(RowFilter):
    """Reversed facts: both entities present, object first, not a copy, relation rewritten.

    The entities come from the example's ``subject``/``object`` fields (the names are
    configurable) and are checked by :func:`~mstudy.strategies.reverse.reversal_problem`, as
    the ``reverse`` strategy checks them: each one given must appear, the object first when
    both are given. Without both, ``require_entities`` rejects the example. ``rules`` maps a
    forward relation phrase to phrases one of which the reversal must contain
    (``{"father of": ["child of", "s father"]}``; matching is on normalised words, so
    ``'s father`` is written ``s father``); they extend
    :data:`DEFAULT_RELATION_RULES` unless ``default_rules=False``. Beyond the rules, when
    both entities are known, the words between them must change (``A is the father of B`` ->
    ``B is the father of A`` is rejected) unless the relation is symmetric (``symmetric``,
    default :data:`DEFAULT_SYMMETRIC`).
    """

    name = "reverse_check"

    def __init__(
        self,
        *,
        strategies: Sequence[str] = ("reverse",),
        field: str = "text",
        source_field: str = "input",
        subject_field: str = "subject",
        object_field: str = "object",
        require_entities: bool = False,
        require_order: bool = True,
        rules: Mapping[str, Sequence[str] | str] | None = None,
        default_rules: bool = True,
        symmetric: Sequence[str] | None = None,
    ) -> None:
        self.strategies = tuple(strategies)
        self.field, self.source_field = field, source_field
        self.subject_field, self.object_field = subject_field, object_field
        self.require_entities, self.require_order = require_entities, require_order
        merged: dict[str, list[str]] = {}
        for source in (DEFAULT_RELATION_RULES if default_rules else {}, rules or {}):
            for forward, allowed in source.items():
                forms = [allowed] if isinstance(allowed, str) else list(allowed)
                key = normalize(forward)
                if not key:
                    raise ValueError(f"reverse_check: empty relation phrase {forward!r}")
                merged[key] = [n for n in (normalize(f) for f in forms) if n]
        self.rules = merged
        self.symmetric = tuple(
            normalize(s) for s in (DEFAULT_SYMMETRIC if symmetric is None else symmetric)
        )

    def reason(self, example: Example) -> tuple[str, str] | None:
        if not _applies(example, self.strategies):
            return None
        text = _field(example, self.field) or ""
        source = _field(example, self.source_field) or ""
        subject = _field(example, self.subject_field)
        obj = _field(example, self.object_field)
        problem = reversal_problem(text, source, subject, obj, require_order=self.require_order)
        if problem is not None:
            return problem
        if not (subject and subject.strip() and obj and obj.strip()):
            if self.require_entities:
                return (
                    "no entities",
                    f"fields {self.subject_field!r}/{self.object_field!r} missing or empty",
                )
            subject = obj = None
        norm_text, norm_source = normalize(text), normalize(source)
        for forward, allowed in self.rules.items():
            if _phrase_in(forward, norm_source) and not any(
                _phrase_in(form, norm_text) for form in allowed
            ):
                return (
                    "relation not rewritten",
                    f"source says {forward!r}; the reversal has none of {allowed[:4]!r}",
                )
        if subject and obj:
            forward_rel = _between(source, subject, obj)
            backward_rel = _between(text, obj, subject)
            if (
                forward_rel
                and forward_rel == backward_rel
                and not any(_phrase_in(s, forward_rel) for s in self.symmetric)
            ):
                return (
                    "relation not rewritten",
                    f"{forward_rel!r} kept with the entities swapped: that inverts the fact",
                )
        return None


_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _number_value(token: str) -> str:
    cleaned = token.replace(",", "" if _THOUSANDS.fullmatch(token) else ".")
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return token
    return str(value.numerator) if value.denominator == 1 else str(float(value))


def numbers(text: str, *, words: bool = True) -> set[str]:
    """The numbers in ``text``, canonical (``1,000`` and ``1000.0`` are both ``1000``).

    With ``words``, number words count too (up to twenty, the tens, hundred, thousand,
    million): ``three`` is ``3``.
    """
    found = _digit_numbers(text)
    return found | _word_numbers(text) if words else found


def _digit_numbers(text: str) -> set[str]:
    return {_number_value(token) for token in set(_NUMBER.findall(text))}


def _word_numbers(text: str) -> set[str]:
    return {_NUMBER_WORDS[w] for w in set(_WORD.findall(text.casefold())) if w in _NUMBER_WORDS}


def _starts_sentence(text: str, start: int) -> bool:
    """Whether the word at ``start`` begins the text, a line or a sentence."""
    before = text[max(0, start - 16) : start]
    stripped = before.rstrip()
    if not stripped:
        return start - len(before) == 0 or "\n" in before
    return stripped[-1] in ".!?:;" or "\n" in before[len(stripped) :]


def entities(text: str) -> set[str]:
    """Normalised capitalised words that do not start a sentence: names, places, titles."""
    out: set[str] = set()
    for match in _CAPITALISED.finditer(text):
        word = match.group(1)
        if not word[0].isupper():
            continue
        if _starts_sentence(text, match.start()):
            continue
        norm = normalize(word)
        if norm:
            out.add(norm)
    return out


def _bigrams(words: list[str]) -> set[tuple[str, ...]]:
    if len(words) < 2:
        return {tuple(words)}
    return set(itertools.pairwise(words))


class ParaphraseCheck(RowFilter):
    """Paraphrases: names and numbers kept, no number added, not a near-copy.

    ``min_entity_recall`` is the share of the source's names (capitalised words not
    starting a sentence) the paraphrase must contain. ``max_overlap`` is the word-bigram
    Jaccard similarity at and above which the paraphrase is "too close to the source".
    Scripts without letter case have no detectable names: only numbers and overlap apply.
    """

    name = "paraphrase_check"

    def __init__(
        self,
        *,
        strategies: Sequence[str] = ("paraphrase",),
        field: str = "text",
        source_field: str = "input",
        min_entity_recall: float = 1.0,
        keep_numbers: bool = True,
        allow_new_numbers: bool = False,
        max_overlap: float = 0.9,
    ) -> None:
        if not 0 <= min_entity_recall <= 1:
            raise ValueError(
                f"paraphrase_check: min_entity_recall must be in [0, 1], got {min_entity_recall}"
            )
        if not 0 < max_overlap <= 1:
            raise ValueError(f"paraphrase_check: max_overlap must be in (0, 1], got {max_overlap}")
        self.strategies = tuple(strategies)
        self.field, self.source_field = field, source_field
        self.min_entity_recall, self.max_overlap = min_entity_recall, max_overlap
        self.keep_numbers, self.allow_new_numbers = keep_numbers, allow_new_numbers

    def reason(self, example: Example) -> tuple[str, str] | None:
        if not _applies(example, self.strategies):
            return None
        text = _field(example, self.field) or ""
        words = normalize(text).split()
        if not words:
            return ("empty", f"{self.field!r} has no words")
        source = _field(example, self.source_field)
        if source is None:
            return None
        source_words = normalize(source).split()
        if words == source_words:
            return ("copy of the source", text[:120])
        a, b = _bigrams(words), _bigrams(source_words)
        overlap = len(a & b) / max(len(a | b), 1)
        if overlap >= self.max_overlap:
            detail = f"word-bigram overlap {overlap:.2f} >= {self.max_overlap}"
            return ("too close to the source", detail)
        names = entities(source)
        if names:
            present = set(words)
            kept = {n for n in names if set(n.split()) <= present}
            recall = len(kept) / len(names)
            if recall < self.min_entity_recall:
                lost = sorted(names - kept)
                return ("entity dropped", f"missing {', '.join(lost[:5])} (kept {recall:.0%})")
        if self.keep_numbers or not self.allow_new_numbers:
            # a source number may be written as a word or in digits; only digits can be "added"
            # ("one of them" is no number)
            got_digits, want_digits = _digit_numbers(text), _digit_numbers(source)
            got = got_digits | _word_numbers(text)
            missing = want_digits - got
            if self.keep_numbers and missing:
                return ("number changed", f"missing {', '.join(sorted(missing)[:5])}")
            added = got_digits - want_digits - _word_numbers(source)
            if not self.allow_new_numbers and added:
                return ("number added", f"not in the source: {', '.join(sorted(added)[:5])}")
        return None


class RefusalFilter(RowFilter):
    """Refusals ("I'm sorry, I can't...") and assistant boilerplate ("As an AI...").

    Looks at the first ``window`` characters and the last 200 of ``field``. ``patterns``
    (regular expressions, case-insensitive) extend :data:`DEFAULT_BOILERPLATE` unless
    ``default_patterns=False``. ``strategies`` limits it to some strategies (default: all).
    """

    name = "refusal"

    def __init__(
        self,
        *,
        field: str = "text",
        strategies: Sequence[str] = (),
        patterns: Sequence[str] = (),
        default_patterns: bool = True,
        window: int = 400,
    ) -> None:
        if window < 1:
            raise ValueError(f"refusal: window must be >= 1, got {window}")
        self.field, self.strategies, self.window = field, tuple(strategies), window
        sources = [*(DEFAULT_BOILERPLATE if default_patterns else ()), *patterns]
        try:
            self._patterns = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in sources]
        except re.error as exc:
            raise ValueError(f"refusal: bad pattern: {exc}") from exc
        self.patterns = tuple(sources)

    def reason(self, example: Example) -> tuple[str, str] | None:
        if not _applies(example, self.strategies):
            return None
        text = _field(example, self.field) or ""
        head = text[: self.window]
        tail = text[-200:] if len(text) > self.window else ""
        if is_refusal(head) or _REFUSAL_EXTRA.search(head):
            return ("refusal", head[:120])
        for pattern in self._patterns:
            for part in (head, tail):
                match = pattern.search(part) if part else None
                if match:
                    return ("boilerplate", f"{match.group(0).strip()!r} in {part[:80]!r}")
        return None
