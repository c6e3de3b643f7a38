"""Relations and small worlds the probe selection and prompt tests share."""

from __future__ import annotations

from mstudy.probes.world import Relation, World
from mstudy.probes.world_generator import generate_world

TEACHES = Relation(
    name="teaches",
    subject_type="person",
    object_type="pupil",
    forward="{subject} teaches {object}.",
    inverse="{object} is taught by {subject}.",
    forward_question="Whom does {subject} instruct?",
    reverse_question="Who instructs {object}?",
    inverse_forms=("{object} * taught by {subject}.", "{object} * teacher is {subject}."),
    paraphrases=("{subject} is the teacher of {object}.",),
)
"""A person-to-person relation: the one a weak teacher reverses with the roles swapped."""


def small_world(*relations: Relation, facts: int = 24, seed: int = 3) -> World:
    """A generated world over exactly ``relations``."""
    return generate_world(
        facts, len(relations), seed=seed, relations={r.name: r for r in relations}
    )
