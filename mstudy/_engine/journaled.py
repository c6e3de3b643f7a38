"""A journaled run: the study phase spools rows and checkpoints, the sink phase copies the
spools into the sinks, then the journal goes. Killed anywhere and run again, it goes on from
the last checkpoint and writes every row once (:mod:`mstudy._journal`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mstudy._journal import Checkpoint, Journal
from mstudy.cache import CallCache
from mstudy.errors import CapabilityError
from mstudy.interfaces import Filter, Resettable, Stateful, missing_members
from mstudy.report import Report

from .checkpoints import Checkpointer
from .run import StudyRun
from .sinking import SinkSet

if TYPE_CHECKING:
    from mstudy.study import Study


def run_journaled(study: Study, source: Any, *, limit: int | None, restart: bool) -> Report:
    """Run ``study`` through its journal: resume or start, study, sink, clean up."""
    assert study.journal is not None
    require_saved_state(study.filters)
    journal = Journal(study.journal, study.fingerprint(limit), restart=restart)
    try:  # whatever happens, the journal is unlocked (and kept, unless the run removed it)
        return _run(study, source, limit, journal)
    finally:
        journal.close()


def _run(study: Study, source: Any, limit: int | None, journal: Journal) -> Report:
    if study.cache is None:
        study.cache = CallCache(journal.directory / "calls.sqlite")
    state = journal.state
    stopped = False
    if state is None or state.phase == "studying":
        stopped = _study(study, source, limit, journal, state)
    assert journal.state is not None and journal.state.report is not None
    report = journal.state.report
    study.last_report = report
    with SinkSet.open(
        study.sink_specs, study.rejects_spec, study=study_label(journal.fingerprint)
    ) as sinks:
        for kind in ("accepted", "rejects"):
            for row in journal.rows(kind):
                sinks.add_row(kind, row)
    if stopped:  # a spent budget: the rows so far are written, the journal goes on
        return report
    if study._after_sink is not None:  # a chain records the stage done while resumable
        study._after_sink(report)
    journal.remove()
    if study.cache is not None and study.cache.path.parent == journal.directory:
        study.cache.close()
        study.cache = None
    return report


def require_saved_state(filters: Sequence[Filter]) -> None:
    """Refuse a filter that keeps state (``reset``) but cannot save it: resumed, it would
    forget what it saw and decide otherwise than an uninterrupted run."""
    for filt in filters:
        if isinstance(filt, Resettable) and not isinstance(filt, Stateful):
            missing = missing_members(filt, Stateful)
            raise CapabilityError(
                f"filter {filt.name!r} keeps state (it has reset()) but cannot save it: it "
                f"lacks {', '.join(missing)}. A resumed run would forget what it saw, so a "
                "journaled study cannot use it; add get_state()/set_state() (see "
                "mstudy.interfaces.Stateful) or run without a journal",
                component=filt.name,
                missing=missing,
            )


def _study(
    study: Study, source: Any, limit: int | None, journal: Journal, state: Checkpoint | None
) -> bool:
    """The study phase, from the checkpoint on; True when the budget stopped it early."""
    study.reset_filters()
    if state is not None:
        for filt in study.filters:
            saved = state.filter_states.get(filt.name)
            if saved is not None and isinstance(filt, Stateful):
                filt.set_state(saved)
        if state.report is not None:
            state.report.resume()
    run = StudyRun(
        study,
        source,
        limit=limit,
        skip=state.items_done if state else 0,
        skip_last_id=state.last_id if state else None,
        report=state.report if state else None,
    )
    journal.open_spools()
    try:
        checkpoints = Checkpointer(journal, run, study.filters, study.cache, study.checkpoint_every)
        run.on_boundary = checkpoints.at_boundary
        for item in run:
            checkpoints.spool(item)
        stopped = run.stop_reason is not None
        checkpoints.save("studying" if stopped else "sinking")
    finally:
        journal.close_spools()
    return stopped


def study_label(fingerprint: Mapping[str, Any]) -> str:
    """The sha256 of a study's fingerprint, as the sinks that record it (a manifest) get it."""
    text = json.dumps(fingerprint, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
