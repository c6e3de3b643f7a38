"""Templates render in a sandbox; record values are data, never template code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mstudy import Record, Reverse, TemplateError
from mstudy._templates import compile_template, render

template_like = st.one_of(
    st.text(),
    st.builds(lambda a, b: f"{a}{{{{ {b} }}}}{a}", st.text(max_size=5), st.text(max_size=10)),
    st.builds(lambda a: f"{{% for x in range(10**9) %}}{a}{{% endfor %}}", st.text(max_size=5)),
    st.just("{{ ''.__class__.__mro__[1].__subclasses__() }}"),
    st.just("{% raw %}{{ x }}{% endraw %}{# c #}"),
)


@given(template_like)
def test_record_values_pass_through_verbatim(value: str) -> None:
    assert render("<{{ text }}>", {"text": value}) == f"<{value}>"


@given(template_like)
def test_strategy_prompt_contains_the_value_verbatim(value: str) -> None:
    if not value.strip():
        return
    record = Record.from_mapping({"id": "r", "text": value})
    request = Reverse().requests(record)[0]
    assert f"Fact: {value}" in request.messages[-1].content


def test_unknown_variable_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(TemplateError, match="undefined"):
        render("Hello {{ nmae }}", {"name": "x"})


def test_sandbox_blocks_unsafe_template_code() -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(TemplateError, match="line 2"):
        render("ok\n{% if %}", {})


names = st.sampled_from(["text", "subject", "object", "n", "none", "range"])
pieces = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(blacklist_characters="{}%#"), max_size=8),
        names.map(lambda n: f"{{{{ {n} }}}}"),
        names.map(lambda n: f"{{{{{n}}}}}"),
        st.just("{# note #}\n"),
        st.just("\r\n"),
        st.just("{% if object %}A {{ object }}\n{% else %}B\n{% endif %}"),
        st.just("{{ none or '' }}"),
        st.just("{{ n or 'zero' }}{{ object or \"-\" }}"),
        st.just("{% if text %}[{{ text or 'x' }}]{% endif %}"),
        st.just("{% if n %}{% if none %}a{% else %}{{ subject }}{% endif %}{% endif %}\n"),
        st.just("{% if subject %}s{% elif n %}n{% endif %}"),
        st.just("{% if not n %}z{% endif %}"),
        st.just("{% for i in range(2) %}{{ i }}{% endfor %}"),
        st.just("{{ text | upper }}"),
    ),
    max_size=8,
)
values = st.fixed_dictionaries(
    {"text": st.text(max_size=10), "subject": st.text(max_size=5), "n": st.integers()},
    optional={"none": st.none(), "object": st.floats(allow_nan=False)},
)


@given(pieces, values)
def test_rendering_is_exactly_jinjas(parts: list[str], variables: dict) -> None:
    source = "".join(parts)
    try:
        expected = compile_template(source).render(**variables)
    except Exception:  # an undefined name: render must raise TemplateError, as jinja would
        with pytest.raises(TemplateError):
            render(source, variables)
        return
    assert render(source, variables) == expected


def test_built_in_prompts_render_without_a_jinja_context() -> None:
    from mstudy import ChainOfThought, Explain, Paraphrase, Reverse
    from mstudy._templates import _substitution_plan

    for strategy in (Explain(), Reverse(), Paraphrase(), ChainOfThought()):
        for source in (strategy._template, strategy._system, strategy._prefill):
            assert not source or _substitution_plan(source) is not None, (strategy.name, source)
