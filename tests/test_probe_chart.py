"""The reversal probe's chart, drawn with matplotlib; without matplotlib the probe still
writes everything else and says it skipped the chart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from view_helpers import make_probe

from mstudy.probes.chart import chart_from_report, render_chart

pytest.importorskip("matplotlib")


def test_chart_is_a_png_of_the_result(tmp_path: Path) -> None:
    from matplotlib.image import imread

    folder = make_probe(tmp_path / "probe")
    png = (folder / "chart.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    height, width = imread(folder / "chart.png").shape[:2]
    assert width >= 640 and height >= 480
    # the same chart from report.json (what mstudy view draws when a folder has no chart.png)
    report = json.loads((folder / "report.json").read_text())
    assert chart_from_report(report) == png


def test_render_chart_keeps_its_signature(tmp_path: Path) -> None:
    import inspect

    parameters = list(inspect.signature(render_chart).parameters)
    assert parameters == ["result"]


def test_without_matplotlib_the_probe_skips_the_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_probe(tmp_path / "probe")  # an older run left a chart.png here
    assert (folder / "chart.png").is_file()
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.warns(RuntimeWarning, match=r"chart\.png skipped: .*matplotlib.*mstudy\[local\]"):
        make_probe(folder)
    names = {p.name for p in folder.iterdir()}
    assert {"report.json", "table.md", "reversals.jsonl"} <= names
    assert "chart.png" not in names  # not left behind to contradict the new report
