"""The composition probe's run: do a teacher's chains or composed statements teach two hops?

:func:`run_compose_probe` runs the steps in order (each timed):

1. **World** (:mod:`mstudy.probes.compose_world`): atomic facts about invented people
   ("A's mentor is B.", "B lives in C.") and the two-hop questions they imply ("Where does A's
   mentor live?"), generated (:func:`~mstudy.probes.compose_files.generate_compose_world`) or
   loaded (:func:`~mstudy.probes.compose_files.load_compose_world`); half the questions of
   each composition are held out.
2. **Study** (:mod:`mstudy.probes.compose_studying`): rule texts first (the world's check),
   then the teacher's ``cot`` chains for the format questions (verified by ``answer_check``),
   ``connect`` composed statements for every question, and the paraphrase control.
3. **Students** (:mod:`mstudy.probes.compose_data`, :func:`~mstudy.probes.training.
   train_students`): the reversal probe's tiny GPT-2, per condition and seed.
4. **Result**: held-out accuracy per condition (mean, min-max over seeds), chance, each
   teacher condition's share of its rule ceiling: :class:`~mstudy.probes.compose_result.
   ComposeResult`, written by :func:`write_compose_outputs`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mstudy.interfaces import Teacher
from mstudy.probes.common import environment
from mstudy.probes.compose_chart import render_compose_chart
from mstudy.probes.compose_data import COMPOSE_CONDITIONS, build_compose_data
from mstudy.probes.compose_files import generate_compose_world, load_compose_world
from mstudy.probes.compose_result import ComposeCondition, ComposeResult
from mstudy.probes.compose_studying import study_compose
from mstudy.probes.compose_world import ComposeWorld
from mstudy.probes.errors import ProbeError
from mstudy.probes.progress import Times, timer
from mstudy.probes.student import StudentConfig
from mstudy.probes.training import default_workers, train_students
from mstudy.strategies.cot import extract_final_answer
from mstudy.text import normalize

__all__ = ["COMPOSE_DEFAULTS", "COMPOSE_STUDENT", "run_compose_probe", "write_compose_outputs"]

COMPOSE_DEFAULTS: dict[str, Any] = {
    "teacher": "default",
    "people": 40,
    "seeds": 2,
    "epochs": 80,
    "samples": 2,
}
"""The defaults of :func:`run_compose_probe` and ``mstudy probe compose``."""

COMPOSE_STUDENT = StudentConfig(layers=1, width=96, train_embeddings=False)
"""The composition probe's student: one layer, input embeddings left at their random start.

A student that learns its input embeddings composes two facts without writing the middle
entity whenever it has learnt to copy names (which writing a chain needs): the subject's
vector comes to hold its mentor's identity in the form a lookup of the mentor reads, and one
student seed in four then answers a third or more of the held-out questions directly. With
fixed input embeddings every fact is stored in the single layer's weights, and one layer
cannot chain two lookups: what composing is left most likely goes through an attention
head's linear map, which few seeds learn (atomic only 3.5% and 8.6% on two pairs of world
seeds, against 14.1% before; docs/probe.md, "Copying is the bridge")."""


def _score(answer: str, gold: frozenset[str], mode: str) -> bool:
    got = extract_final_answer(answer) if mode == "chain" else answer
    if not got:
        return False
    return normalize(got) in {normalize(g) for g in gold}


def run_compose_probe(
    *,
    teacher: Teacher | str = COMPOSE_DEFAULTS["teacher"],
    people: int = COMPOSE_DEFAULTS["people"],
    world: ComposeWorld | None = None,
    world_dir: str | Path | None = None,
    world_seed: int = 0,
    seeds: int = COMPOSE_DEFAULTS["seeds"],
    epochs: int = COMPOSE_DEFAULTS["epochs"],
    samples: int = COMPOSE_DEFAULTS["samples"],
    student: StudentConfig | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> ComposeResult:
    """Run the composition probe and return what it measured.

    Args:
        teacher: ``"default"`` (embedded SmolLM2), ``"rules"`` (the ceilings only), any
            teacher plugin name, or a Teacher object.
        people, world_seed: size and seed of the generated world (``world_seed`` also splits
            a loaded world's questions).
        world / world_dir: a ready ComposeWorld, or a folder with ``facts.jsonl`` and
            ``relations.toml``/``.json``.
        seeds: student seeds per condition. epochs: student training epochs.
        samples: teacher rounds; a round asks again only what has no accepted text yet.
        student: student size and training settings (default :data:`COMPOSE_STUDENT`).
        workers: students trained at once.
        progress: progress lines and bars on stderr.
    """
    if seeds < 1 or epochs < 1 or samples < 1:
        raise ProbeError("seeds, epochs and samples must each be at least 1")
    times: Times = {}
    with timer(times, "world"):
        if world is None:
            world = (
                load_compose_world(world_dir, seed=world_seed)
                if world_dir is not None
                else generate_compose_world(people, seed=world_seed)
            )
    config = StudentConfig(**{**(student or COMPOSE_STUDENT).to_dict(), "epochs": epochs})
    study = study_compose(world, teacher, samples=samples, seed=world_seed, progress=progress)
    times.update(study.times)
    data = build_compose_data(world, study)
    outputs = train_students(
        {name: [*data.base, *extra] for name, extra in data.extra.items()},
        data.prompts,
        config,
        seeds=seeds,
        workers=workers,
        progress=progress,
        times=times,
        max_new_tokens=data.max_new_tokens,
    )
    n = data.held_out
    conditions: list[ComposeCondition] = []
    for name, extra in data.extra.items():
        label, mode = COMPOSE_CONDITIONS[name]
        cond = ComposeCondition(name, label, mode, len(extra), len(data.base) + len(extra))
        for seed in range(seeds):
            answers, trained, _ = outputs[(name, seed)]
            ok = [_score(a, g, mode) for a, g in zip(answers, data.gold, strict=True)]
            cond.held_out.append(sum(ok[:n]) / n)
            cond.format.append(sum(ok[n:]) / max(len(ok) - n, 1))
            cond.train_seconds.append(round(trained, 2))
            if seed == 0:
                cond.examples = [
                    {"prompt": p, "answer": a, "gold": sorted(g), "correct": k}
                    for p, a, g, k in list(
                        zip(data.prompts[name], answers, data.gold, ok, strict=True)
                    )[:3]
                ]
        conditions.append(cond)
    stats = dict(study.stats)
    return ComposeResult(
        teacher=study.teacher,
        world={
            "facts": len(world.facts),
            "questions": len(world.questions),
            "held_out": n,
            "format": len(world.format_questions),
            "relations": sorted(world.relations),
            "compositions": sorted(world.compositions),
            "entities": len(world.entity_types),
            "source": world.where,
            "seed": world_seed,
            "shortcuts": world.shortcuts(),
        },
        settings={
            "seeds": seeds,
            "epochs": config.epochs,
            "samples": samples,
            "student": config.to_dict(),
            "student_max_new_tokens": data.max_new_tokens,
            "workers": workers if workers is not None else default_workers(),
            "paraphrases_from_rules": data.paraphrases_from_rules,
        },
        conditions=conditions,
        chance=world.chance(),
        teacher_stats=stats,
        leak_check=data.leak_check,
        times={k: {t: round(x, 2) for t, x in v.items()} for k, v in times.items()},
        environment=environment(),
        rows=study.rows,
        world_data=world.to_dict(),
        training_data={"base": data.base, "extra": data.extra, "prompts": data.prompts},
    )


def write_compose_outputs(result: ComposeResult, out: str | Path) -> list[Path]:
    """Write ``report.json``, ``table.md``, ``chart.png``, ``texts.jsonl`` (every accepted
    teacher chain and composed statement with its checks), ``training_data.json`` and
    ``world.json`` to ``out``; return the paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "report.json": json.dumps(result.to_dict(), indent=2) + "\n",
        "table.md": result.table() + "\n",
        "texts.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.rows),
        "training_data.json": json.dumps(result.training_data, indent=1) + "\n",
        "world.json": json.dumps(result.world_data, indent=1) + "\n",
    }
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    chart = folder / "chart.png"
    chart.write_bytes(render_compose_chart(result))
    written.insert(2, chart)
    return written
