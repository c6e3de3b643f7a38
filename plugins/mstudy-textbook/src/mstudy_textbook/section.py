"""A textbook section as data: parse a teacher's reply into its parts, and write it back.

The layout the ``textbook`` strategy asks for::

    # <title>
    ## Explanation
    <what the idea means and why it holds>
    ## Worked example
    Problem: <a problem that uses the idea>
    Solution: <its step-by-step solution>
    ## Exercises
    1. <question>
    Answer: <answer>

The parser also reads the variants small models write: ``Title:`` / ``Explanation:`` labels
instead of Markdown headings, bold headings, one heading per example or exercise
(``### Exercise 2``), answers inline (``1. 2 + 2? Answer: 4``) or collected in a final
``## Answers`` list. What lacks a part is refused with a :class:`SectionError` that says which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Exercise", "Section", "SectionError", "WorkedExample", "parse_section"]

# Lines are matched after their white space is folded (" ".join(line.split())), so a single
# optional space (" ?") stands for any spacing, and no pattern can backtrack badly.
_MARK = r"(?:\*\*|__)?"
_LABELS = {
    "title": "title",
    "explanation": "explanation",
    "concept": "explanation",
    "lesson": "explanation",
    "worked example": "example",
    "worked examples": "example",
    "example": "example",
    "examples": "example",
    "exercise": "exercise",
    "exercises": "exercises",
    "practice": "exercises",
    "practice problems": "exercises",
    "answers": "answers",
    "answer key": "answers",
}
# labels that may carry text on their own line without a heading mark ("Title: Area")
_INLINE_OK = frozenset({"title", "explanation", "concept", "lesson", "worked example"})
_LABEL = "|".join(re.escape(k) for k in sorted(_LABELS, key=len, reverse=True))
_HEADING = re.compile(
    rf"^(?P<hashes>#{{1,6}})? ?(?P<open>\*\*|__)? ?(?P<label>{_LABEL})\b(?: ?(?P<num>\d+)\b)?"
    rf" ?(?P<close>\*\*|__)? ?(?P<sep>[:.)\-–—])? ?{_MARK} ?(?P<rest>.*)$",
    re.IGNORECASE,
)
_HASH_TITLE = re.compile(r"^#{1,6} (?P<title>[^#].*)$")
_SOLUTION = re.compile(
    rf"^{_MARK} ?(?:solution|answer|working|steps) ?{_MARK} ?[:：] ?{_MARK} ?(?P<rest>.*)$",
    re.IGNORECASE,
)
_PROBLEM = re.compile(
    rf"^(?:\d+[.)] ?)?{_MARK} ?(?:problem|question|example|task)(?: \d+)? ?{_MARK} ?[:：] ?"
    rf"{_MARK} ?(?P<rest>.*)$",
    re.IGNORECASE,
)
_NUMBERED = re.compile(r"^(?P<num>\d+) ?[.)] (?P<rest>.*)$")
_BULLET = re.compile(r"^[-*•] (?P<rest>.*)$")
_LABELLED = re.compile(
    rf"^{_MARK} ?(?:exercise|question|q) ?(?P<num>\d+)? ?{_MARK} ?[:.)] ?{_MARK} ?(?P<rest>.*)$",
    re.IGNORECASE,
)
_ITEM_STYLES = (("numbered", _NUMBERED), ("bullet", _BULLET), ("labelled", _LABELLED))
_ANSWER = re.compile(
    rf"^(?:[-*•] ?)?{_MARK} ?(?:answer|a|solution)(?: \d+)? ?{_MARK} ?[:：] ?{_MARK} ?"
    rf"(?P<rest>.*)$",
    re.IGNORECASE,
)
_INLINE_ANSWER = re.compile(rf" {_MARK}(?:answer|solution) ?{_MARK} ?[:：] ?", re.IGNORECASE)


class SectionError(ValueError):
    """A reply is not a usable textbook section: ``reason`` is short and stable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class WorkedExample:
    """A problem and its worked solution."""

    problem: str
    solution: str

    def to_dict(self) -> dict[str, str]:
        return {"problem": self.problem, "solution": self.solution}


@dataclass(frozen=True, slots=True)
class Exercise:
    """A question for the student and its answer."""

    question: str
    answer: str

    def to_dict(self) -> dict[str, str]:
        return {"question": self.question, "answer": self.answer}


@dataclass(frozen=True, slots=True)
class Section:
    """A parsed textbook section."""

    title: str
    explanation: str
    examples: tuple[WorkedExample, ...]
    exercises: tuple[Exercise, ...]

    def to_markdown(self) -> str:
        """The section in the canonical layout (what :func:`parse_section` reads back)."""
        parts = [f"# {self.title}", "## Explanation", self.explanation]
        for i, example in enumerate(self.examples, 1):
            heading = "## Worked example" + (f" {i}" if len(self.examples) > 1 else "")
            parts += [heading, f"Problem: {example.problem}\nSolution: {example.solution}"]
        items = [f"{i}. {e.question}\nAnswer: {e.answer}" for i, e in enumerate(self.exercises, 1)]
        parts += ["## Exercises", "\n".join(items)]
        return "\n\n".join(parts)


@dataclass
class _Block:
    kind: str
    num: int | None = None
    lines: list[str] = field(default_factory=list)


def _clean(lines: list[str]) -> str:
    """Lines joined, each stripped and single-spaced, blank lines at either end dropped."""
    text = "\n".join(" ".join(line.split()) for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _heading(line: str) -> tuple[str, int | None, str] | None:
    """``(kind, number, rest)`` when ``line`` opens a part of the section, else None.

    A heading is marked (``## Exercises``, ``**Exercises**``), or a plain label ending in a
    colon: alone (``Exercises:``), numbered (``Exercise 2: ...``) or, for the title, the
    explanation and a worked example, followed by its text (``Title: Area``).
    """
    match = _HEADING.match(line)
    if match is None:
        return None
    label = " ".join(match["label"].lower().split())
    kind, number, rest, sep = _LABELS[label], match["num"], match["rest"], match["sep"]
    if match["hashes"] or (match["open"] and match["close"]):
        if rest and not sep and number is None:
            return None  # "## Examples of area" is a heading, but not of a part
    elif sep != ":" or (rest and number is None and label not in _INLINE_OK):
        return None
    if kind == "exercise" and number is None:
        kind = "exercises"
    return kind, int(number) if number else None, rest


def _blocks(text: str) -> tuple[str, list[_Block]]:
    """The reply cut at its headings, and its title.

    The title is a ``Title:`` line (or the line after a bare one), or else a first
    ``# Heading`` that names no part; chatter before that heading is dropped.
    """
    title = ""
    want_title = False
    blocks = [_Block("preamble")]
    for line in (" ".join(raw.split()) for raw in text.splitlines()):
        if want_title and line:
            title, want_title = line.strip(), False
            continue
        found = _heading(line)
        if found is not None:
            kind, number, rest = found
            if kind == "title":
                if not title:
                    title, want_title = rest, not rest
                continue
            blocks.append(_Block(kind, number, [rest] if rest else []))
            continue
        hashed = _HASH_TITLE.match(line)
        if hashed is not None and not title and len(blocks) == 1:
            title = hashed["title"]
            blocks[0].lines.clear()
            continue
        blocks[-1].lines.append(line)
    return title.strip("*_# ").strip(), blocks


def _drop_blank_head(lines: list[str]) -> list[str]:
    for at, line in enumerate(lines):
        if line.strip():
            return lines[at:]
    return []


def _split_examples(lines: list[str]) -> list[list[str]]:
    """One worked-examples block cut at each ``Problem:`` line after the first."""
    groups: list[list[str]] = [[]]
    solved = False
    for line in lines:
        if solved and _PROBLEM.match(line):
            groups.append([])
            solved = False
        groups[-1].append(line)
        solved = solved or _SOLUTION.match(line) is not None
    return [g for g in groups if _clean(g)]


def _worked_example(lines: list[str], number: int) -> WorkedExample:
    for at, line in enumerate(lines):
        solution = _SOLUTION.match(line)
        if solution is not None:
            problem_lines = lines[:at]
            solution_lines = [solution["rest"], *lines[at + 1 :]]
            break
    else:
        raise SectionError("worked example without a solution", f"worked example {number}")
    problem_lines = _drop_blank_head(problem_lines)
    if problem_lines:
        head = _PROBLEM.match(problem_lines[0])
        if head is not None:
            problem_lines = [head["rest"], *problem_lines[1:]]
    problem, solution_text = _clean(problem_lines), _clean(solution_lines)
    if not problem:
        raise SectionError("worked example without a problem", f"worked example {number}")
    if not solution_text:
        raise SectionError("worked example without a solution", f"worked example {number}")
    return WorkedExample(problem, solution_text)


@dataclass
class _Item:
    number: int | None
    question: list[str] = field(default_factory=list)
    answer: list[str] | None = None


def _item_start(line: str, style: str | None) -> tuple[str, int | None, str] | None:
    """``(style, number, text)`` when ``line`` starts an item of ``style`` (any when None)."""
    for name, pattern in _ITEM_STYLES:
        if style not in (None, name):
            continue
        match = pattern.match(line)
        if match is not None:
            number = match.groupdict().get("num")
            return name, int(number) if number else None, match["rest"]
    return None


def _items(lines: list[str], number: int | None = None) -> list[_Item]:
    """Items of one block, each a question with an optional ``Answer:``.

    Items are numbered, bulleted or labelled (``Exercise 1:``); the first item sets the
    style, so a bulleted list inside a numbered question stays part of it. A block given a
    ``number`` (``### Exercise 2``) holds one item, and starts a new one only after an answer.
    """
    items: list[_Item] = [] if number is None else [_Item(number)]
    style: str | None = None
    for line in lines:
        answer = _ANSWER.match(line)
        if answer is not None and items:
            items[-1].answer = [answer["rest"]]
            continue
        start = _item_start(line, style)
        if start is not None and (number is None or items[-1].answer is not None):
            style = start[0]
            items.append(_Item(start[1], [start[2]]))
            continue
        if not items:
            if line.strip():
                items.append(_Item(None, [line]))
            continue
        target = items[-1].answer if items[-1].answer is not None else items[-1].question
        target.append(line)
    for item in items:  # "1. What is 2 + 2? Answer: 4"
        if item.answer is None and item.question:
            parts = _INLINE_ANSWER.split(item.question[0], maxsplit=1)
            if len(parts) == 2:
                item.question[0], item.answer = parts[0], [parts[1], *item.question[1:]]
                del item.question[1:]
    return [it for it in items if _clean(it.question) or _clean(it.answer or [])]


def _late_answer(
    item: _Item, position: int, answers: list[_Item], numbered: dict[int, _Item]
) -> list[str] | None:
    """The answer to ``item`` in a separate answers list: by its number, else by position."""
    found = numbered.get(item.number if item.number is not None else position)
    if found is None and len(answers) >= position and answers[position - 1].number is None:
        found = answers[position - 1]
    if found is None:
        return None
    lines = _drop_blank_head(found.question + (found.answer or []))
    labelled = _ANSWER.match(lines[0]) if lines else None
    return [labelled["rest"], *lines[1:]] if labelled is not None else lines


def _exercises(blocks: list[_Block]) -> list[Exercise]:
    items: list[_Item] = []
    answers: list[_Item] = []
    for block in blocks:
        if block.kind == "exercises":
            items += _items(block.lines)
        elif block.kind == "exercise":
            items += _items(block.lines, block.num)
        elif block.kind == "answers":
            answers += _items(block.lines)
    numbered: dict[int, _Item] = {}
    for late in answers:
        if late.number is not None:
            numbered.setdefault(late.number, late)
    out: list[Exercise] = []
    for position, item in enumerate(items, 1):
        question = _clean(item.question)
        if not question:
            raise SectionError("exercise without a question", f"exercise {position}")
        lines = item.answer
        if lines is None:
            lines = _late_answer(item, position, answers, numbered)
        answer = _clean(lines or [])
        if not answer:
            raise SectionError(
                "exercise without an answer", f"exercise {position}: {question[:80]}"
            )
        out.append(Exercise(question, answer))
    return out


def parse_section(text: str) -> Section:
    """Parse a textbook section; :class:`SectionError` names the part that is missing."""
    title, blocks = _blocks(text)
    if not title:
        raise SectionError("no title", text.strip()[:80])
    explained = [b for b in blocks if b.kind == "explanation"]
    source = explained or [b for b in blocks if b.kind == "preamble"]
    explanation = _clean([line for b in source for line in b.lines])
    if not explanation:
        raise SectionError("no explanation", f"section {title[:80]!r}")
    examples: list[WorkedExample] = []
    for block in (b for b in blocks if b.kind == "example"):
        for group in _split_examples(block.lines) or [[]]:
            examples.append(_worked_example(group, len(examples) + 1))
    if not examples:
        raise SectionError("no worked example", f"section {title[:80]!r}")
    exercises = _exercises(blocks)
    if not exercises:
        raise SectionError("no exercises", f"section {title[:80]!r}")
    return Section(title, explanation, tuple(examples), tuple(exercises))
