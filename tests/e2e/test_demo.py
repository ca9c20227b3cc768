"""`make demo`: the tiny LLaVA learns the shapes colour question through `vlaunch local`.

The same two commands as the Makefile target, with the shipped examples/demo.yaml and
examples/registry.yaml copied next to a freshly synthesised dataset, so the test leaves the
repository untouched. The question needs the image (5 colours, uniform: chance 20%; the
majority answer of the held-out split is the `chance` that eval.json states).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.helpers import vlaunch
from tests.trainer.helpers import REPO, explain

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_make_demo_learns_the_held_out_split(tmp_path: Path) -> None:
    for name in ("demo.yaml", "registry.yaml"):
        shutil.copy(REPO / "examples" / name, tmp_path / name)
    synth = vlaunch("data", "synth", "data/shapes", "--if-missing", cwd=tmp_path)
    assert synth.returncode == 0, explain(synth)
    proc = vlaunch(
        "local", "demo.yaml", f"output.dir={tmp_path / 'runs'}", cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, explain(proc)
    run = tmp_path / "runs" / "demo"
    ev = json.loads((run / "eval.json").read_text())
    print(
        f"\ndemo: accuracy {ev['accuracy_before']:.1%} -> {ev['accuracy_after']:.1%}, "
        f"chance {ev['chance']:.1%} on {ev['num_samples']} held-out samples"
    )
    assert ev["num_samples"] == 200
    assert ev["accuracy_before"] <= ev["chance"] + 0.1  # starts at (or below) chance
    assert ev["accuracy_after"] >= 0.9
    assert "held-out exact match: before" in proc.stdout
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
