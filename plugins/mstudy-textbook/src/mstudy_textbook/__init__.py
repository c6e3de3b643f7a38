"""mstudy-textbook: the ``textbook`` strategy for mstudy.

A teacher turns each record into a short textbook section (a title, an explanation, worked
examples and exercises with answers)::

    import mstudy

    study = mstudy.Study("default", ["textbook"], sinks=["out/textbook.jsonl"])

or ``mstudy_textbook.Textbook(level="primary school", exercises=3)`` as an object.
"""

from __future__ import annotations

from mstudy_textbook.section import Exercise, Section, SectionError, WorkedExample, parse_section
from mstudy_textbook.strategy import Textbook

__version__ = "0.1.0"

__all__ = [
    "Exercise",
    "Section",
    "SectionError",
    "Textbook",
    "WorkedExample",
    "__version__",
    "parse_section",
]
