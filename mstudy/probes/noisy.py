"""A rules teacher with injected errors: a stand-in for teachers of known error rates.

:func:`noisy_rules_teacher` answers like the ``rules`` teacher, except that each ``reverse``
request is, with probability ``rate``, answered with one of three kinds of error (by default
*systematically*: the same facts and the same kind per relation in every round, as a real
teacher's habits are; see ``systematic``):

* ``swap``: the roles exchanged, in the spec's own subject-first noun form (a paraphrase;
  the forward template where there is none) with the names swapped (``B is the teacher of
  A`` for ``A teaches B``): false;
* ``hallucination``: a clause the fact does not support: another relation's inverse
  statement between the same names (``B was written by A`` for ``A founded B``: false), or an
  invented, dangling one (``B is the place where A is the leader of``: undecided);
* ``rewording``: a statement the spec does not list (``B owes its existence to A``):
  undecided.

Paraphrases stay the rules'. The probe's selection never sees which is which.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from mstudy._hashing import stable_hash
from mstudy.probes.rules import RulesTeacher
from mstudy.probes.templates import fill
from mstudy.probes.world import Fact, World
from mstudy.records import Request

__all__ = ["ERROR_KINDS", "noisy_reversal", "noisy_rules_teacher"]

ERROR_KINDS = ("swap", "hallucination", "rewording")


def noisy_reversal(world: World, fact: Fact, kind: str, rng: random.Random) -> str:
    """A wrong or unlisted "reversal" of ``fact`` of the given kind (see the module)."""
    s, o = fact.subject, fact.object
    relation = world.relation(fact)
    if kind == "swap":  # the noun form where there is one, as the teacher did
        forms = list(relation.paraphrases) or [relation.forward]
        return fill(rng.choice(forms), o, s)
    if kind == "hallucination":
        others = [r for r in world.relations.values() if r.name != fact.relation]
        if others and rng.random() < 0.5:
            return fill(rng.choice(others).inverse, s, o)
        return f"{o} is the place where {s} is the leader of."
    if kind == "rewording":
        return f"{o} owes its existence to {s}."
    raise ValueError(f"unknown error kind {kind!r}; choose from {ERROR_KINDS}")


def noisy_rules_teacher(
    world: World,
    rate: float,
    *,
    seed: int = 0,
    kinds: Sequence[str] = ERROR_KINDS,
    systematic: bool = True,
    prompt_sensitive: bool = False,
) -> RulesTeacher:
    """The rules teacher with a ``rate`` share of its reversals replaced by errors of
    ``kinds``.

    ``systematic`` (default): a teacher's habit, not bad luck. Which facts it gets wrong is
    drawn once per fact (every sample of that fact repeats the error) and the kind of error
    once per relation (every wrong fact of a relation is wrong the same way), so the errors
    form patterns many facts share. Otherwise each request draws afresh.

    ``prompt_sensitive`` (with ``systematic``): the habit belongs to the prompt as well, as a
    small model's does: asked with other few-shot examples (another system prompt, other
    example turns or another prefill after the name), the teacher draws its wrong facts and
    error kinds afresh, while the same
    prompt at another temperature repeats them.
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    bad = [k for k in kinds if k not in ERROR_KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be some of {ERROR_KINDS}, got {list(kinds)}")
    by_pair = {(f.subject, f.object): f for f in world.facts}
    by_text = {world.statement(f): f for f in world.facts}

    def reply(request: Request) -> str:
        v = request.variables
        fact = by_pair.get((str(v.get("subject")), str(v.get("object"))))
        fact = fact or by_text.get(str(v.get("text")))
        if fact is None:
            raise KeyError("the noisy rules teacher only knows the probe world's facts")
        if request.strategy == "paraphrase":
            return world.paraphrase_statement(fact, request.sample)
        if systematic:
            prompt = ""
            if prompt_sensitive:  # few-shot turns, system prompt, prefill; not the fact's
                lead = (request.prefill or "").replace(fact.object, "")
                prompt = stable_hash([*(m.content for m in request.messages[:-1]), lead])
            rng = random.Random(f"{seed}:{fact.id}{prompt}")
            habit = random.Random(f"{seed}:{fact.relation}{prompt}")
            kind = habit.choice(list(kinds))
        else:
            rng = random.Random(f"{seed}:{fact.id}:{request.params.seed}:{request.sample}")
            habit = rng
            kind = rng.choice(list(kinds))
        if rng.random() < rate:
            return noisy_reversal(world, fact, kind, habit)
        return world.inverse_statement(fact)

    relations = {name: r.to_dict() for name, r in world.relations.items()}
    teacher = RulesTeacher(
        reply,
        fingerprint=stable_hash(
            ["probe-noisy-rules", relations, rate, seed, list(kinds), systematic, prompt_sensitive]
        ),
    )
    teacher.name = f"rules+{rate:.0%} {'systematic' if systematic else 'random'} errors"
    return teacher
