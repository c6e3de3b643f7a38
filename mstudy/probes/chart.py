"""``chart.png`` of the reversal probe, drawn with matplotlib (Agg backend, no display).

Bars per condition (forward and reverse accuracy on the held-out facts, mean with min-max
whiskers), the chance line of reverse questions, a legend and a footnote with the world's
size and the teacher's yield and precision. :func:`render_chart` draws a
:class:`~mstudy.probes.result.ProbeResult`; :func:`chart_from_report` draws the same chart
from the ``report.json`` a probe wrote (``mstudy view`` uses it). matplotlib comes with the
``local`` and ``view`` extras; without it both raise an :class:`ImportError` that says how to
install it (the probe then skips the chart).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from mstudy.probes.result import ProbeResult
from mstudy.sinks.base import import_optional

__all__ = ["chart_from_report", "render_chart"]

FORWARD_COLOR, REVERSE_COLOR, CHANCE_COLOR = "#5a8cc8", "#dc6e3c", "#787878"


def render_chart(result: ProbeResult) -> bytes:
    """A PNG bar chart: forward and reverse accuracy per condition, min-max whiskers, chance.

    Raises ImportError (saying how to install it) when matplotlib is not installed.
    """
    return chart_from_report(result.to_dict())


def chart_from_report(report: Mapping[str, Any]) -> bytes:
    """The chart of :func:`render_chart` from a probe's ``report.json`` (as a dict).

    Raises ImportError without matplotlib, and KeyError or TypeError when ``report`` lacks
    what the chart shows (``conditions``, ``chance``, ``world``, ``settings``,
    ``teacher_stats``).
    """
    import_optional("matplotlib", "local", "the reversal probe's chart")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    conditions: Sequence[Mapping[str, Any]] = report["conditions"]
    chance = float(report["chance"]["reverse"])
    figure = Figure(figsize=(max(6.4, 1.9 * len(conditions) + 1.6), 4.8), dpi=100)
    FigureCanvasAgg(figure)  # the Agg canvas: draws to memory, needs no display
    axes = figure.add_subplot()
    width = 0.36
    for j, (key, label, color) in enumerate(
        (
            ("forward", "forward questions", FORWARD_COLOR),
            ("reverse", "reverse questions", REVERSE_COLOR),
        )
    ):
        xs, means, lows, highs = [], [], [], []
        for i, condition in enumerate(conditions):
            values = [float(v) for v in condition[key]["per_seed"]]
            if not values:
                continue
            mean = sum(values) / len(values)
            xs.append(i + (j - 0.5) * width)
            means.append(mean)
            lows.append(mean - min(values))
            highs.append(max(values) - mean)
        bars = axes.bar(
            xs,
            means,
            width,
            yerr=[lows, highs],
            capsize=5,
            color=color,
            label=label,
            error_kw={"elinewidth": 1, "ecolor": "#1e1e1e"},
        )
        axes.bar_label(bars, labels=[f"{m:.0%}" for m in means], padding=2, fontsize=8)
    if math.isfinite(chance):
        axes.axhline(
            chance,
            color=CHANCE_COLOR,
            linestyle="--",
            linewidth=1,
            label=f"chance (reverse) {chance:.1%}",
        )
    axes.set_ylim(0, 1.2)  # room for the legend above 100%
    axes.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.yaxis.grid(True, color="#dddddd")
    axes.set_axisbelow(True)
    axes.set_ylabel("accuracy on held-out facts")
    axes.set_xticks(range(len(conditions)))
    axes.set_xticklabels([textwrap.fill(str(c["label"]), 18) for c in conditions], fontsize=9)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(loc="upper left", fontsize=8, frameon=False, ncols=3)
    axes.set_title(
        f"reversal probe: student accuracy on held-out facts ({report['teacher']} teacher)",
        fontsize=11,
    )
    stats = report["teacher_stats"]
    figure.text(
        0.01,
        0.01,
        f"{report['world']['facts']} facts, {report['settings']['seeds']} seeds, bars = mean, "
        f"whiskers = min-max; teacher yield {stats['yield']:.0%}, "
        f"precision {stats['precision']:.0%}",
        fontsize=8,
        color="#444444",
    )
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
