"""What the probe asks the teacher: the ``reverse`` and ``paraphrase`` strategies it uses,
with their system prompts, few-shot examples and prefills."""

from __future__ import annotations

from mstudy.strategies import Paraphrase, Reverse

__all__ = [
    "PARAPHRASE_EXAMPLES",
    "RETRY_EXAMPLES",
    "REVERSE_EXAMPLES",
    "REVERSE_SYSTEM",
    "REVERSE_TEMPLATE",
    "ROLE_EXAMPLES",
    "THIRD_EXAMPLES",
    "SubjectFirstParaphrase",
    "probe_paraphrase",
    "probe_reverse",
    "reverse_examples",
    "reverse_lead",
    "statement_shape",
]


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


#: Few-shot examples for a source that names a role (``A is the <noun> of B``): a 135M teacher
#: shown only passives swaps such roles ("B is the captain of A"); shown the object's
#: possessive last, it copies "B's <noun> is A", which keeps the roles and which ``role_check``
#: confirms. Invented names and role nouns no probe world uses.
ROLE_EXAMPLES: tuple[tuple[dict[str, str], str], ...] = (
    (
        {"text": "Tarvin built Oskelo.", "subject": "Tarvin", "object": "Oskelo"},
        "Oskelo was built by Tarvin.",
    ),
    (
        {
            "text": "Mirelda Vosk is the keeper of Quorth Hale.",
            "subject": "Mirelda Vosk",
            "object": "Quorth Hale",
        },
        "Quorth Hale's keeper is Mirelda Vosk.",
    ),
    (
        {"text": "Sela carved Dunmore.", "subject": "Sela", "object": "Dunmore"},
        "Dunmore was carved by Sela.",
    ),
    (
        {"text": "Brannoc is the guardian of Ilsa.", "subject": "Brannoc", "object": "Ilsa"},
        "Ilsa's guardian is Brannoc.",
    ),
)


#: Few-shot examples for the retry rounds (facts with no verified reversal yet): the same
#: lesson in other words, with names of two words kept whole, ending in a relative clause, a
#: possessive and a passive of a person-to-person verb, so a teacher stuck in one habit gets
#: other forms to copy.
RETRY_EXAMPLES: tuple[tuple[dict[str, str], str], ...] = (
    (
        {
            "text": "Orvane Tesk guards Pellith Moor.",
            "subject": "Orvane Tesk",
            "object": "Pellith Moor",
        },
        "Pellith Moor was guarded by Orvane Tesk.",
    ),
    (
        {"text": "Tarvin built Oskelo.", "subject": "Tarvin", "object": "Oskelo"},
        "Oskelo was the tower that Tarvin built.",
    ),
    (
        {"text": "Mirelda is the keeper of Quorth.", "subject": "Mirelda", "object": "Quorth"},
        "Quorth's keeper is Mirelda.",
    ),
    (
        {
            "text": "Sela Brun guides Dunmore Pell.",
            "subject": "Sela Brun",
            "object": "Dunmore Pell",
        },
        "Dunmore Pell was guided by Sela Brun.",
    ),
)


#: The third round's examples: the retry examples with the possessive last, the form a small
#: model copies most (and the one the third round's prefill for a verb starts).
THIRD_EXAMPLES: tuple[tuple[dict[str, str], str], ...] = (
    RETRY_EXAMPLES[0],
    RETRY_EXAMPLES[1],
    RETRY_EXAMPLES[3],
    RETRY_EXAMPLES[2],
)


def statement_shape(text: str, subject: str, obj: str) -> str:
    """``"role"`` for a statement that names the subject's role (``A is the <noun> of B``,
    ``A is a <noun> to B``), else ``"verb"``; read from the statement alone."""
    from mstudy.filters.roles import relation_words

    phrase, _ = relation_words(text, subject, obj)
    if len(phrase) >= 3 and phrase[0] in ("is", "was") and phrase[-1] in ("of", "to", "for"):
        return "role"
    return "verb"


def reverse_lead(shape: str, round_: int = 0) -> str:
    """What the reply is prefilled with after the object, by the statement's shape and the
    round. A role (``A is the captain of B``): ``'s`` (``B's captain is A``; a small teacher
    otherwise copies the source's words with the names exchanged, ``B is the captain of A``),
    then `` was`` from the third round. A verb (``A teaches B``): nothing in the first round,
    `` was`` in the second (``B was taught by A``, not ``B is the teacher of A``), ``'s`` from
    the third (``B's teacher is A``)."""
    if shape == "role":
        return "'s" if round_ < 2 else " was"
    return ("", " was")[round_] if round_ < 2 else "'s"


def reverse_examples(shape: str, round_: int = 0) -> tuple[tuple[dict[str, str], str], ...]:
    """The few-shot examples for a statement of ``shape`` (:func:`statement_shape`) in round
    ``round_``: the first round by shape, the second :data:`RETRY_EXAMPLES`, later ones
    :data:`THIRD_EXAMPLES`."""
    if round_ > 1:
        return THIRD_EXAMPLES
    if round_ == 1:
        return RETRY_EXAMPLES
    return ROLE_EXAMPLES if shape == "role" else REVERSE_EXAMPLES


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


def probe_reverse(
    *,
    seed: int,
    temperature: float = 0.3,
    max_new_tokens: int = 24,
    prefill: bool = True,
    examples: tuple[tuple[dict[str, str], str], ...] = REVERSE_EXAMPLES,
    lead: str = "",
) -> Reverse:
    """The probe's ``reverse`` strategy: a short system prompt, four few-shot turns, the names
    repeated in the user turn, the reply prefilled with the object (the strategy's default;
    ``prefill=False`` for the rules teacher, whose inverse template may start otherwise, e.g.
    with an article: ``The company {object} was ...``). ``examples``: the few-shot turns
    (:func:`reverse_examples` picks them by the statement's shape and the round). ``lead``:
    words the reply is prefilled with after the object (:func:`reverse_lead`)."""
    return Reverse(
        prefill=("{{ object or '' }}" + lead if lead else None) if prefill else "",
        system=REVERSE_SYSTEM,
        examples=examples,
        template=REVERSE_TEMPLATE,
        params={
            "seed": seed,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "stop": ["\n"],
        },
    )


def probe_paraphrase(
    *, seed: int, temperature: float = 0.7, max_new_tokens: int = 28, prefill: bool = True
) -> Paraphrase:
    """The probe's ``paraphrase`` strategy: the reply prefilled with the subject (not with
    ``prefill=False``, for the rules teacher)."""
    return SubjectFirstParaphrase(
        prefill=None if prefill else "",
        params={
            "seed": seed,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "stop": ["\n"],
        },
    )
