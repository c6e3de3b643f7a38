"""The section parser: the layouts small models write, the parts it refuses to do without."""

from __future__ import annotations

import time
from importlib.resources import files

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mstudy_textbook import Exercise, Section, SectionError, WorkedExample, parse_section

CANONICAL = """# Boiling on a mountain

## Explanation
Water boils when its vapour pressure matches the pressure of the air above it.

## Worked example
Problem: Why does pasta take longer to cook on a mountain?
Solution: The water boils at a lower temperature,
so the pasta cooks in cooler water.

## Exercises
1. Does water boil at a higher or lower temperature on a mountain?
Answer: Lower.
2. What must the vapour pressure of water match for it to boil?
Answer: The pressure of the air above it.
"""


def test_canonical_layout() -> None:
    section = parse_section(CANONICAL)
    assert section.title == "Boiling on a mountain"
    assert section.explanation.startswith("Water boils when its vapour pressure")
    assert section.examples == (
        WorkedExample(
            "Why does pasta take longer to cook on a mountain?",
            "The water boils at a lower temperature,\nso the pasta cooks in cooler water.",
        ),
    )
    assert [e.answer for e in section.exercises] == ["Lower.", "The pressure of the air above it."]
    assert section.exercises[0].question.startswith("Does water boil")


@pytest.mark.parametrize("name", ["shot-rectangle.md", "shot-curie.md"])
def test_the_few_shot_replies_are_sections_the_parser_reads(name: str) -> None:
    text = (files("mstudy_textbook") / "templates" / name).read_text(encoding="utf-8")
    section = parse_section(text)
    assert len(section.examples) == 1 and len(section.exercises) == 2
    assert parse_section(section.to_markdown()) == section


def test_labels_instead_of_headings_and_chatter_before_the_title() -> None:
    text = (
        "Sure! Here is the section.\n\n"
        "Title: Boiling on a mountain\n"
        "Explanation: Water boils when its vapour pressure matches the air pressure.\n"
        "Worked example:\n"
        "Problem: Pasta on a mountain?\n"
        "Solution: Cooler water, so it takes longer.\n"
        "Exercises:\n"
        "1. Higher or lower? Answer: Lower.\n"
        "2) What does vapour pressure match?\n"
        "   Answer: The air pressure.\n"
    )
    section = parse_section(text)
    assert section.title == "Boiling on a mountain"
    assert section.explanation == ("Water boils when its vapour pressure matches the air pressure.")
    assert section.examples[0].problem == "Pasta on a mountain?"
    assert section.exercises == (
        Exercise("Higher or lower?", "Lower."),
        Exercise("What does vapour pressure match?", "The air pressure."),
    )


def test_bold_headings_one_heading_per_part_and_an_answer_key() -> None:
    text = (
        "# **Boiling**\n"
        "Water boils when its vapour pressure matches the air pressure.\n"
        "**Example 1:** Pasta on a mountain.\n"
        "**Solution:** It cooks in cooler water.\n"
        "### Example 2\n"
        "Question: Tea at the summit?\n"
        "Answer: It is made with cooler water.\n"
        "### Exercise 1\n"
        "Higher or lower?\n"
        "### Exercise 2\n"
        "Why?\n"
        "## Answers\n"
        "1. Lower.\n"
        "2. The air pressure is lower.\n"
    )
    section = parse_section(text)
    assert section.title == "Boiling"
    assert section.explanation.startswith("Water boils")
    assert [e.problem for e in section.examples] == ["Pasta on a mountain.", "Tea at the summit?"]
    assert [(e.question, e.answer) for e in section.exercises] == [
        ("Higher or lower?", "Lower."),
        ("Why?", "The air pressure is lower."),
    ]


def test_a_bulleted_list_inside_a_numbered_question_stays_in_it() -> None:
    text = CANONICAL.replace(
        "2. What must the vapour pressure",
        "2. Which is true?\n- it rises\n- it falls\nAnswer: it falls.\n"
        "3. What must the vapour pressure",
    )
    section = parse_section(text)
    assert len(section.exercises) == 3
    assert section.exercises[1] == Exercise("Which is true?\n- it rises\n- it falls", "it falls.")


def test_several_problems_under_one_worked_examples_heading() -> None:
    text = CANONICAL.replace(
        "## Exercises",
        "Problem: Why is tea weak at the summit?\nSolution: The water is cooler.\n\n## Exercises",
    )
    section = parse_section(text)
    assert [e.solution for e in section.examples][1] == "The water is cooler."


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("# Boiling on a mountain\n", "", "no title"),
        (
            "## Explanation\nWater boils when its vapour pressure matches the pressure of the "
            "air above it.\n",
            "",
            "no explanation",
        ),
        ("## Worked example", "## Notes", "no worked example"),
        ("Solution: The water boils", "The water boils", "worked example without a solution"),
        (
            "Problem: Why does pasta take longer to cook on a mountain?\n",
            "",
            "worked example without a problem",
        ),
        ("## Exercises", "## More", "no exercises"),
        ("Answer: Lower.\n", "", "exercise without an answer"),
    ],
)
def test_missing_parts_are_named(old: str, new: str, reason: str) -> None:
    assert old in CANONICAL
    with pytest.raises(SectionError) as info:
        parse_section(CANONICAL.replace(old, new))
    assert info.value.reason == reason


def test_the_unanswered_exercise_is_named() -> None:
    with pytest.raises(SectionError) as info:
        parse_section(CANONICAL.replace("Answer: The pressure of the air above it.\n", ""))
    assert info.value.detail.startswith("exercise 2: What must the vapour pressure")


# -- properties ---------------------------------------------------------------------------------

# words that are no part label ("answer", "example", ...): no r, s, t, w or x
word = st.text(alphabet="abcdefghijklmnopquvyz", min_size=1, max_size=10)
words = st.lists(word, min_size=1, max_size=6).map(" ".join)
sentences = st.lists(words, min_size=1, max_size=3).map(lambda ws: ". ".join(ws) + ".")
sections = st.builds(
    Section,
    title=words,
    explanation=sentences,
    examples=st.lists(st.builds(WorkedExample, sentences, sentences), min_size=1, max_size=3).map(
        tuple
    ),
    exercises=st.lists(st.builds(Exercise, sentences, sentences), min_size=1, max_size=4).map(
        tuple
    ),
)


@settings(max_examples=200)
@given(st.text(max_size=400))
def test_never_crashes_on_any_text(text: str) -> None:
    try:
        section = parse_section(text)
    except SectionError as exc:
        assert exc.reason
        return
    assert section.title and section.explanation and section.examples and section.exercises
    assert all(e.question and e.answer for e in section.exercises)


line_kinds = st.sampled_from(
    [
        "# Title",
        "## Explanation",
        "Explanation: text",
        "## Worked example",
        "Problem: p",
        "Solution: s",
        "## Exercises",
        "1. q",
        "Answer: a",
        "- b",
        "## Answers",
        "### Exercise 2",
        "**Example 1:** e",
        "text words",
        "",
    ]
)


@settings(max_examples=300)
@given(st.lists(line_kinds, max_size=14))
def test_never_crashes_on_shuffled_section_parts(lines: list[str]) -> None:
    try:
        section = parse_section("\n".join(lines))
    except SectionError as exc:
        assert exc.reason
        return
    assert section.title and section.examples and section.exercises


@given(sections)
def test_a_written_section_reads_back_the_same(section: Section) -> None:
    assert parse_section(section.to_markdown()) == section


def layout(section: Section, without: str) -> str:
    """``section`` in the canonical layout, leaving out one part."""
    parts = [f"# {section.title}"]
    if without != "explanation":
        parts += ["## Explanation", section.explanation]
    if without != "worked example":
        for e in section.examples:
            parts += ["## Worked example", f"Problem: {e.problem}\nSolution: {e.solution}"]
    if without != "exercises":
        parts.append("## Exercises")
        parts += [
            f"{i}. {e.question}\nAnswer: {e.answer}" for i, e in enumerate(section.exercises, 1)
        ]
    return "\n\n".join(parts)


@given(sections, st.sampled_from(["explanation", "worked example", "exercises"]))
def test_a_section_without_a_part_is_refused_for_that_part(section: Section, part: str) -> None:
    assert parse_section(layout(section, without="nothing")) == section
    with pytest.raises(SectionError) as info:
        parse_section(layout(section, without=part))
    assert info.value.reason == f"no {part}"


@pytest.mark.parametrize(
    "text",
    [
        " " * 20_000 + "x",
        "# " + "#" * 20_000,
        "** " * 7_000,
        "\t \t" * 7_000 + "Answer",
        "1. " + "answer " * 3_000,
        "## Worked example\n" + "Problem: p\n" * 2_000,
        "# T\nx\n## Worked example\nProblem: p\nSolution: s\n## Exercises\n" + "1. q\n" * 4_000,
    ],
    ids=["spaces", "hashes", "bold", "tabs", "answers", "problems", "exercises"],
)
def test_degenerate_replies_are_parsed_in_linear_time(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(SectionError):
        parse_section(text)
    assert time.perf_counter() - started < 2.0  # backtracking regexes took hours here
