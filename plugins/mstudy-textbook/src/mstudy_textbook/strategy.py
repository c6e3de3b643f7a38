"""``textbook``: a record becomes a short textbook section, as the Phi models were taught.

"Textbooks are all you need": a student learns more from a teacher-written section that
explains an idea, works an example and sets exercises with answers than from the bare
statement. Each reply is parsed into its parts; a section without a title, an explanation, a
worked example with its solution or exercises with answers is rejected, saying which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any, ClassVar

from mstudy import GenerationParams, Record, Reject, TemplateStrategy
from mstudy.text import contains, normalize

from mstudy_textbook.section import SectionError, parse_section

__all__ = ["Textbook"]

_TEMPLATES = files("mstudy_textbook") / "templates"


def _read(name: str) -> str:
    return (_TEMPLATES / name).read_text(encoding="utf-8").strip()


def _shot(text: str, reply_file: str) -> tuple[dict[str, str], str]:
    variables = {"text": text, "level": "secondary school", "worked_examples": "1"}
    return {**variables, "exercises": "2"}, _read(reply_file)


class Textbook(TemplateStrategy):
    """Write a textbook section about a record: title, explanation, worked examples, exercises.

    Args:
        level: the audience the section is written for, e.g. ``"primary school"``.
        exercises: how many exercises to ask for; ``min_exercises`` is the fewest accepted.
        worked_examples: how many worked examples to ask for (at least one is required).
        min_words: the fewest words the explanation may have.
        **kwargs: the common strategy parameters (``n``, ``fields``, ``params``, ...).

    Roles: ``text`` (required), ``topic`` (optional; the section must then mention it).
    Rows: ``input`` (the statement), ``text`` (the section as Markdown), ``answer`` (None),
    and ``title``, ``explanation``, ``worked_examples`` (``problem``/``solution``),
    ``exercises`` (``question``/``answer``) and ``level``.
    """

    name = "textbook"
    version = "1"
    roles = ("text",)
    optional_roles = ("topic",)
    system = _read("system.j2")
    template = _read("user.j2")
    examples: ClassVar[Sequence[tuple[Mapping[str, str], str]]] = (
        _shot("The area of a rectangle is its length times its width.", "shot-rectangle.md"),
        _shot("Marie Curie discovered polonium.", "shot-curie.md"),
    )
    default_params = GenerationParams(max_new_tokens=512, temperature=0.7)

    def __init__(
        self,
        *,
        level: str = "secondary school",
        exercises: int = 2,
        min_exercises: int = 1,
        worked_examples: int = 1,
        min_words: int = 12,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(level, str) or not level.strip():
            raise ValueError(f"level must be a non-empty string, got {level!r}")
        for label, value in (
            ("exercises", exercises),
            ("min_exercises", min_exercises),
            ("worked_examples", worked_examples),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
        if min_words < 0:
            raise ValueError(f"min_words must be >= 0, got {min_words}")
        self.level = level.strip()
        self.exercises = exercises
        self.min_exercises = min_exercises
        self.worked_examples = worked_examples
        self.min_words = min_words

    def settings(self) -> Mapping[str, Any]:
        return {
            **super().settings(),
            "level": self.level,
            "exercises": self.exercises,
            "min_exercises": self.min_exercises,
            "worked_examples": self.worked_examples,
            "min_words": self.min_words,
        }

    def variables(self, record: Record) -> dict[str, Any]:
        """The record's roles plus the section's shape: ``level``, ``exercises``, ...."""
        return {
            **super().variables(record),
            "level": self.level,
            "exercises": self.exercises,
            "worked_examples": self.worked_examples,
        }

    def check(self, variables: Mapping[str, Any], text: str) -> Mapping[str, Any] | Reject:
        source = variables["text"]
        try:
            section = parse_section(text)
        except SectionError as exc:
            return Reject(exc.reason, exc.detail)
        words = len(section.explanation.split())
        if words < self.min_words:
            return Reject("explanation too short", f"{words} words, need {self.min_words}")
        if normalize(section.explanation) == normalize(source):
            return Reject("copy of the source", section.explanation[:120])
        if len(section.exercises) < self.min_exercises:
            return Reject(
                "too few exercises",
                f"{len(section.exercises)} exercises, need {self.min_exercises}",
            )
        markdown = section.to_markdown()
        topic = variables.get("topic")
        if topic and not contains(markdown, topic):
            return Reject("off topic", f"{topic!r} not in section {section.title[:80]!r}")
        return {
            "input": source,
            "text": markdown,
            "answer": None,
            "title": section.title,
            "explanation": section.explanation,
            "worked_examples": [e.to_dict() for e in section.examples],
            "exercises": [e.to_dict() for e in section.exercises],
            "level": variables.get("level", self.level),
        }
