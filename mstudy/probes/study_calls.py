"""The probe's calls into the library: records, one study, and the filters each study uses.

Shared by the world's pre-flight check (:mod:`mstudy.probes.preflight`, rules teacher) and the
teacher's rounds (:mod:`mstudy.probes.studying`), so both run the same filters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mstudy.filters import LengthFilter
from mstudy.filters.consistency import ParaphraseCheck, ReverseCheck
from mstudy.filters.roles import FUNCTION_WORDS, RoleCheck, relation_words
from mstudy.interfaces import Teacher
from mstudy.probes.rules import SubjectFirstFilter, SwapFilter, entities_by_id
from mstudy.probes.templates import fill
from mstudy.probes.world import Fact, World
from mstudy.records import Example, Rejection
from mstudy.strategies import Paraphrase, Reverse
from mstudy.study import Study

__all__ = ["paraphrase_filters", "records", "relation_agents", "reversal_filters", "run_study"]


def records(world: World, facts: Sequence[Fact]) -> list[dict[str, str]]:
    """The study's input records: the forward statement with its names and relation."""
    return [
        {
            "id": f.id,
            "text": world.statement(f),
            "subject": f.subject,
            "object": f.object,
            "relation": f.relation,
        }
        for f in facts
    ]


def run_study(
    teacher: Teacher,
    strategy: Reverse | Paraphrase,
    filters: Sequence[Any],
    rows: list[dict[str, str]],
    progress: bool,
    cache: str | Path | None = None,
) -> tuple[list[Example], list[Rejection], int]:
    """Run one study (with a call cache at ``cache``, if given); return (accepted, rejected,
    requests sent)."""
    study = Study(teacher, [strategy], filters=list(filters), progress=progress, cache=cache)
    accepted: list[Example] = []
    rejected: list[Rejection] = []
    for item in study.stream(rows):
        if isinstance(item, Example):
            accepted.append(item)
        else:
            rejected.append(item)
    report = study.last_report
    requests = report.strategy(strategy.name).requests if report is not None else 0
    return accepted, rejected, requests


_S, _O = "Qqsubjectqq", "Qqobjectqq"


def relation_agents(world: World) -> dict[str, list[str]]:
    """Relation word -> nouns naming its doer, from each relation's subject-first noun forms
    (``{subject} is the author of {object}.`` gives ``wrote -> author``): the role check's
    vocabulary, from the relation spec (not its answer key, the inverse forms)."""
    agents: dict[str, list[str]] = {}
    for relation in world.relations.values():
        _, content = relation_words(fill(relation.forward, _S, _O), _S, _O)
        for form in (relation.forward, *relation.paraphrases):
            phrase, _ = relation_words(fill(form, _S, _O), _S, _O)
            # "{subject} is the author of {object}": a doer noun of the relation
            if len(phrase) >= 3 and phrase[0] in ("is", "was") and phrase[-1] in ("of", "to"):
                nouns = [w for w in phrase[:-1] if w not in FUNCTION_WORDS]
                for word in content:
                    agents.setdefault(word, []).extend(nouns[-1:])
    return agents


def reversal_filters(world: World) -> list[Any]:
    """What every reversal goes through: ``reverse_check`` (entities, order, relation
    rewritten), ``role_check`` (roles kept, nothing dangling or added, read against the
    source), the swap check and ``length``. No ``dedup``: a fact's samples that agree are
    evidence for selection (:func:`~mstudy.probes.selection.select_verified`)."""
    return [
        ReverseCheck(),
        RoleCheck(agents=relation_agents(world)),
        SwapFilter(entities_by_id(world.facts)),
        LengthFilter(min_words=3, max_words=40),
    ]


def paraphrase_filters(facts: Sequence[Fact]) -> list[Any]:
    """What every paraphrase goes through: ``paraphrase_check``, subject-first, ``length``."""
    from mstudy.filters import ExactDedup

    return [
        ParaphraseCheck(),
        SubjectFirstFilter(entities_by_id(facts)),
        ExactDedup(),
        LengthFilter(min_words=3, max_words=40),
    ]
