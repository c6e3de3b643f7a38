"""The report's funnel as a picture: per strategy, accepted rows and rejections by stage,
drawn with matplotlib (Agg backend, no display)."""

from __future__ import annotations

import io
from collections.abc import Mapping

from mstudy.sinks.base import import_optional

__all__ = ["funnel_png"]

_ACCEPTED = "#4c9a5b"
_STAGES = ["#dc6e3c", "#e8a33d", "#8c6bb1", "#5a8cc8", "#c44e52", "#777777", "#64b5cd"]


def funnel_png(accepted: Mapping[str, int], rejected: Mapping[str, Mapping[str, int]]) -> bytes:
    """A horizontal bar per strategy: accepted, then rejections stacked by stage.

    ``accepted`` maps strategy -> rows; ``rejected`` maps strategy -> stage -> rows (input
    rejections under the strategy ``(input)``). Raises ImportError without matplotlib.
    """
    import_optional("matplotlib", "view", "the funnel chart")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(dict.fromkeys([*accepted, *rejected]))
    stages = list(dict.fromkeys(s for by in rejected.values() for s in by))
    figure = Figure(figsize=(8, 0.6 * len(names) + 1.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    left = [0.0] * len(names)
    values = [float(accepted.get(n, 0)) for n in names]
    axes.barh(names, values, color=_ACCEPTED, label="accepted")
    left = values
    for i, stage in enumerate(stages):
        values = [float(rejected.get(n, {}).get(stage, 0)) for n in names]
        axes.barh(
            names, values, left=left, color=_STAGES[i % len(_STAGES)], label=f"rejected: {stage}"
        )
        left = [a + b for a, b in zip(left, values, strict=True)]
    axes.invert_yaxis()
    axes.set_xlabel("rows")
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    axes.set_title("what became of each strategy's replies", fontsize=11)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
