"""What the probe asks the teacher: the ``reverse`` and ``paraphrase`` strategies it uses,
with their system prompts, few-shot examples and prefills."""

from __future__ import annotations

from mstudy.strategies import Paraphrase, Reverse

__all__ = [
    "PARAPHRASE_EXAMPLES",
    "REVERSE_EXAMPLES",
    "REVERSE_SYSTEM",
    "REVERSE_TEMPLATE",
    "SubjectFirstParaphrase",
    "probe_paraphrase",
    "probe_reverse",
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
    *, seed: int, temperature: float = 0.3, max_new_tokens: int = 24, prefill: bool = True
) -> Reverse:
    """The probe's ``reverse`` strategy: a short system prompt, four few-shot turns, the names
    repeated in the user turn, the reply prefilled with the object (the strategy's default;
    ``prefill=False`` for the rules teacher, whose inverse template may start otherwise, e.g.
    with an article: ``The company {object} was ...``)."""
    return Reverse(
        prefill=None if prefill else "",
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
