"""Selecting one reversal per fact by evidence from its own source, not from other facts.

Agreement across facts (many facts reversed with the same pattern) amplifies a teacher's
*systematic* errors: a 135M teacher swaps the roles of a person-to-person relation the same
way for every fact. :func:`select_verified` therefore takes its evidence from the fact
itself:

1. every candidate has already passed the library's filters, ``role_check`` among them
   (swapped roles, dangling clauses and added claims are rejected against the source);
2. a candidate whose roles ``role_check`` *confirms* against the source (``kept``: a passive
   with the subject as agent, the object's possessive, a relative clause) is selected;
3. a candidate whose roles the check could not settle but that the teacher, restating it
   back subject-first, turned into its source again (``round trip``:
   :class:`~mstudy.filters.roundtrip.RoundTrip`) is selected next;
4. otherwise a candidate that uses a form of the source's relation but whose roles the check
   can neither confirm nor deny (``unknown``) is selected only when at least
   ``min_agreement`` samples of the *same* fact agree on its pattern;
5. a candidate with no word of the source's relation (``ungrounded``: ``B is the apprentice
   of A``, true, and ``B owes its existence to A``, vague, alike) and no round trip cannot be
   verified and is not selected;
6. agreement across facts only breaks ties.

Nothing here looks at the world's answer key.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from mstudy.probes.rules import Candidate

__all__ = ["select_verified"]


def select_verified(
    candidates: Iterable[Candidate], *, min_agreement: int = 2
) -> tuple[dict[str, Candidate], dict[str, str], dict[str, str]]:
    """Keep at most one verified reversal per fact.

    Returns (fact id -> chosen candidate, fact id -> why none was chosen, fact id -> the
    evidence the chosen one had: ``"role check"``, ``"round trip"`` or ``"samples agree"``).
    """
    by_fact: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_fact[candidate.fact.id].append(candidate)
    support: dict[str, Counter[str]] = defaultdict(Counter)
    for items in by_fact.values():
        for key in {c.pattern for c in items if c.pattern}:
            support[items[0].group][key] += 1
    chosen: dict[str, Candidate] = {}
    dropped: dict[str, str] = {}
    evidence: dict[str, str] = {}
    for fact_id, items in by_fact.items():
        agree = Counter(c.pattern for c in items if c.pattern)

        def rank(c: Candidate, agree: Counter[str] = agree) -> tuple[int, int, int, int]:
            votes = agree[c.pattern] if c.pattern else 0
            verified = 2 if c.check == "kept" else int(c.check == "round trip")
            return (verified, votes, support[c.group][c.pattern], -c.sample)

        best = max(items, key=rank)
        votes = agree[best.pattern] if best.pattern else 0
        if best.check == "kept":
            chosen[fact_id], evidence[fact_id] = best, "role check"
        elif best.check == "round trip":
            chosen[fact_id], evidence[fact_id] = best, "round trip"
        elif best.check == "unknown" and votes >= min_agreement:
            chosen[fact_id], evidence[fact_id] = best, "samples agree"
        else:
            dropped[fact_id] = (
                f"roles {best.check} and {votes} of the fact's samples agree on "
                f"{best.pattern!r} (fewer than {min_agreement})"
            )
    return chosen, dropped, evidence
