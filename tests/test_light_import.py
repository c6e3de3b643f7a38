"""``import mstudy`` stays light: heavy libraries load only when a feature needs them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "transformers", "datasets", "pyarrow", "huggingface_hub", "numpy"]


def test_import_mstudy_loads_no_heavy_library() -> None:
    code = (
        "import sys, json, mstudy, mstudy.study, mstudy.strategies, mstudy.filters, mstudy.sinks;"
        "s = mstudy.Study(mstudy.ScriptedTeacher(), ['reverse']);"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
