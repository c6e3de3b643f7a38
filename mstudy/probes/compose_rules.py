"""The composition probe's ``rules`` teacher: perfect chains and composed statements.

A :class:`~mstudy.teachers.scripted.ScriptedTeacher` that answers ``cot`` with the rule chain
(both facts restated, then the final answer), ``connect`` with the composition's composed
template and ``paraphrase`` with the relation's paraphrase templates. It runs through the same
strategies and filters as a model teacher and gives the ceiling conditions.
"""

from __future__ import annotations

from mstudy._hashing import stable_hash
from mstudy.probes.compose_world import ComposeWorld
from mstudy.records import Request
from mstudy.teachers.scripted import ScriptedTeacher

__all__ = ["compose_rules_teacher"]


def compose_rules_teacher(world: ComposeWorld) -> ScriptedTeacher:
    """Rule replies: ``cot`` and ``connect`` requests are found by their source id (a question
    id), ``paraphrase`` requests by their ``text`` (an atomic statement)."""
    questions = {q.id: q for q in world.questions}
    facts = {world.statement(f): f for f in world.facts}

    def reply(request: Request) -> str:
        if request.strategy == "cot":
            return world.rule_chain(questions[request.source_id])
        if request.strategy == "connect":
            return world.composed_statement(questions[request.source_id])
        if request.strategy == "paraphrase":
            return world.paraphrase_statement(facts[str(request.variables["text"])])
        raise KeyError(f"the rules teacher has no rule for strategy {request.strategy!r}")

    return ScriptedTeacher(reply, fingerprint=stable_hash(["probe-compose-rules", world.to_dict()]))
