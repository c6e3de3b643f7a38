"""Writing a probe result to a folder: the report, table, chart and the data behind them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from mstudy.probes.chart import render_chart
from mstudy.probes.result import ProbeResult

__all__ = ["write_outputs"]


def write_outputs(result: ProbeResult, out: str | Path) -> list[Path]:
    """Write ``report.json``, ``table.md``, ``chart.png``, ``reversals.jsonl`` (every teacher
    reversal with its verdicts), ``training_data.json`` (what each student saw, and the
    held-out questions) and ``world.json`` to ``out``; return the paths. Without matplotlib
    the chart is skipped with a RuntimeWarning that says how to install it."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    report = folder / "report.json"
    report.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    written.append(report)
    table = folder / "table.md"
    table.write_text(result.table() + "\n", encoding="utf-8")
    written.append(table)
    chart = folder / "chart.png"
    try:
        png = render_chart(result)
    except ImportError as exc:  # matplotlib is not installed: everything else is written
        chart.unlink(missing_ok=True)  # an older run's chart would not match this report
        warnings.warn(f"chart.png skipped: {exc}", RuntimeWarning, stacklevel=2)
    else:
        chart.write_bytes(png)
        written.append(chart)
    rows = folder / "reversals.jsonl"
    rows.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.reversals),
        encoding="utf-8",
    )
    written.append(rows)
    if result.training_data:
        path = folder / "training_data.json"
        path.write_text(json.dumps(result.training_data, indent=1) + "\n", encoding="utf-8")
        written.append(path)
    if result.world_data:
        path = folder / "world.json"
        path.write_text(json.dumps(result.world_data, indent=1) + "\n", encoding="utf-8")
        written.append(path)
    return written
