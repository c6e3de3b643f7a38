"""``chart.png`` of the composition probe: held-out accuracy per condition (matplotlib).

One bar per condition (mean over seeds, min-max whiskers), the ceilings hatched, chance as a
dashed line. matplotlib is imported when a chart is drawn (a bare ``Figure``, no pyplot).
"""

from __future__ import annotations

import io

from mstudy.probes.compose_result import ComposeResult

__all__ = ["render_compose_chart"]


def render_compose_chart(result: ComposeResult) -> bytes:
    """A PNG bar chart of the held-out two-hop accuracy of every condition."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or state is touched

    figure = Figure(figsize=(9, 4.8), dpi=100)
    axes = figure.subplots()
    labels, means, lows, highs, colors, hatches = [], [], [], [], [], []
    for c in result.conditions:
        values = c.held_out or [0.0]
        mean = sum(values) / len(values)
        labels.append(c.label.replace(" (", "\n("))
        means.append(mean)
        lows.append(mean - min(values))
        highs.append(max(values) - mean)
        colors.append("#dd8452" if c.mode == "chain" else "#4c72b0")
        hatches.append("//" if "ceiling" in c.label else "")
    xs = range(len(labels))
    bars = axes.bar(xs, means, color=colors, yerr=[lows, highs], capsize=4)
    for bar, hatch, mean in zip(bars, hatches, means, strict=True):
        bar.set_hatch(hatch)
        axes.annotate(
            f"{mean:.0%}",
            (bar.get_x() + bar.get_width() / 2, mean),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    axes.axhline(
        result.chance,
        color="grey",
        linestyle="--",
        linewidth=1,
        label=f"chance {result.chance:.1%}",
    )
    axes.set_xticks(list(xs), labels, fontsize=7)
    axes.set_ylim(0, 1.08)
    axes.set_ylabel("held-out two-hop accuracy")
    axes.set_title(
        f"composition probe ({result.teacher} teacher, {result.settings['seeds']} seeds; "
        "orange: answered by a written chain)",
        fontsize=9,
    )
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
