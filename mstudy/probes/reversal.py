"""The reversal probe's run: does a teacher's studying fix a student's reversal curse?

:func:`run_probe` runs the steps in order (each timed) and gathers what they measured:

1. **World**: invented facts (:func:`~mstudy.probes.world_generator.generate_world`) or a
   user's own (:func:`~mstudy.probes.world_files.load_world`).
2. **Study** (:mod:`mstudy.probes.studying`): the forward statements go through a real
   :class:`~mstudy.Study` with the ``reverse`` strategy on the chosen teacher (few-shot prompt,
   reply prefilled with the object, several samples per fact in rounds, the swap filter, then
   consistency selection), and the facts that got a reversal go through ``paraphrase``
   (subject-first filter) for the control. The ceiling's reversals come from the ``rules``
   teacher through the same machinery.
3. **Student** (:mod:`mstudy.probes.student_data`, :mod:`mstudy.probes.training`): a tiny
   GPT-2 trained from scratch per condition and seed: forward statements only; + the teacher's
   reversals; + as many teacher paraphrases (data-size control); + rule reversals (ceiling).
4. **Result**: forward and reverse question accuracy on the held-out half (mean, min-max over
   seeds), chance level, the teacher's yield and precision, time per stage:
   :class:`~mstudy.probes.result.ProbeResult`, written by
   :func:`~mstudy.probes.outputs.write_outputs` as ``report.json``, ``table.md``,
   ``chart.png``, ``reversals.jsonl`` and ``world.json``.

Honesty rules kept: the student never sees a scored question (checked verbatim, the run
stops otherwise), chance is reported, the paraphrase control is always trained, and every
number comes from this run.
"""

from __future__ import annotations

from pathlib import Path

from mstudy.interfaces import Teacher
from mstudy.probes.common import environment
from mstudy.probes.defaults import DEFAULTS
from mstudy.probes.errors import ProbeError
from mstudy.probes.progress import Times, timer
from mstudy.probes.result import ProbeResult
from mstudy.probes.student import StudentConfig
from mstudy.probes.student_data import build_student_data
from mstudy.probes.studying import study_world
from mstudy.probes.training import default_workers, train_conditions
from mstudy.probes.world import World
from mstudy.probes.world_files import load_world
from mstudy.probes.world_generator import generate_world

__all__ = ["DEFAULTS", "run_probe"]


def run_probe(
    *,
    teacher: Teacher | str = DEFAULTS["teacher"],
    facts: int = DEFAULTS["facts"],
    relations: int = DEFAULTS["relations"],
    world: World | None = None,
    world_dir: str | Path | None = None,
    world_seed: int = 0,
    seeds: int = DEFAULTS["seeds"],
    epochs: int = DEFAULTS["epochs"],
    samples: int = DEFAULTS["samples"],
    student: StudentConfig | None = None,
    max_new_tokens: int = 24,
    workers: int | None = None,
    progress: bool = False,
    cache: str | Path | None = None,
) -> ProbeResult:
    """Run the reversal probe and return what it measured.

    Args:
        teacher: ``"default"`` (embedded SmolLM2), ``"rules"`` (teacher-free ceiling), any
            teacher plugin name, or a Teacher object.
        facts, relations, world_seed: size and seed of the generated world (ignored when
            ``world`` or ``world_dir`` is given; ``world_seed`` also splits a loaded world).
        world / world_dir: a ready World, or a folder with ``facts.jsonl`` and
            ``relations.toml``/``.json``.
        seeds: student seeds per condition.
        epochs: student training epochs (overrides ``student.epochs``).
        samples: rounds of teacher sampling; a round asks again only the facts that have no
            selected reversal yet (and, for the control, no paraphrase yet).
        student: student size and training settings.
        max_new_tokens: cap on the length of a teacher reversal.
        workers: students trained at once, each in its own single-threaded process
            (default: one per core, up to 4; 1 trains them one by one in this process).
        progress: show progress (studies and training, with ETA) on stderr.
        cache: a call cache for the teacher (default none; the report names it when used):
            a rerun then re-reads the teacher's replies instead of asking again.
    """
    if seeds < 1 or epochs < 1 or samples < 1:
        raise ProbeError("seeds, epochs and samples must each be at least 1")
    times: Times = {}
    with timer(times, "world"):
        if world is None:
            world = (
                load_world(world_dir, seed=world_seed)
                if world_dir is not None
                else generate_world(facts, relations, seed=world_seed)
            )
    config = StudentConfig(**{**(student or StudentConfig()).to_dict(), "epochs": epochs})
    outcome = study_world(
        world,
        teacher,
        samples=samples,
        seed=world_seed,
        max_new_tokens=max_new_tokens,
        progress=progress,
        cache=cache,
    )
    times.update(outcome.times)
    data = build_student_data(world, outcome)
    conditions = train_conditions(
        data, config, seeds=seeds, workers=workers, progress=progress, times=times
    )
    paraphrases = len(data.extra["teacher_paraphrases"])
    wanted = len(data.extra.get("teacher_reversals", data.extra["rule_reversals"]))
    reversal_rows = [
        {
            "fact": c.fact.id,
            "relation": c.fact.relation,
            "statement": world.statement(c.fact),
            "reversal": c.text,
            "round": c.sample,
            "pattern": c.pattern,
            "selected": outcome.reversals.get(c.fact.id) is c,
            "roles": c.check or None,
            "evidence": (
                outcome.evidence.get(c.fact.id) if outcome.reversals.get(c.fact.id) is c else None
            ),
            "rejected": c.rejected,
            "truth": world.reversal_truth(c.fact, c.text),
            "true": world.is_true_reversal(c.fact, c.text),
        }
        for c in [*outcome.candidates, *outcome.filtered]
    ]
    scored = world.scored_facts
    return ProbeResult(
        teacher=outcome.teacher,
        world={
            "facts": len(world.facts),
            "scored": len(scored),
            "format": len(world.format_facts),
            "relations": len(world.relations),
            "relation_names": sorted(world.relations),
            "entities": len(world.entity_types),
            "source": world.where,
            "seed": world_seed,
        },
        settings={
            "seeds": seeds,
            "epochs": config.epochs,
            "samples": samples,
            "max_new_tokens": max_new_tokens,
            "student": config.to_dict(),
            "student_loss": "every token of every training sequence (plain LM loss)",
            "workers": workers if workers is not None else default_workers(),
        },
        conditions=conditions,
        chance={"forward": world.chance("forward"), "reverse": world.chance("reverse")},
        teacher_stats=outcome.teacher_stats,
        paraphrase_stats={
            **outcome.paraphrase_stats,
            "used": paraphrases,
            "wanted": wanted,
            "from_rules": data.paraphrases_from_rules,
            "note": "the control gets one subject-first paraphrase per fact that got a "
            "reversal (the teacher's; the rule paraphrase where the teacher gave none that "
            "passed the filters), so its count equals the reversals'",
        },
        leak_check=data.leak_check,
        times={k: {t: round(x, 2) for t, x in v.items()} for k, v in times.items()},
        environment=environment(),
        reversals=reversal_rows,
        world_data=world.to_dict(),
        training_data={
            "base": data.base,
            "extra": data.extra,
            "scored_prompts": data.prompts,
            "scored_gold": [sorted(g) for g in data.gold],
        },
    )
