"""Run in a fresh interpreter by the training matrix (test_matrix.py): load merged exports
with transformers only and compute their logits. Importing vlaunch's packages (`launcher`,
`trainer`, `vlaunch_core`) raises, and the script checks at the end that none was imported.

    python reload_plain.py JOBS.json

JOBS.json: [{"export": DIR, "inputs": FILE, "result": FILE}, ...]; each export is loaded once
with `AutoModelForImageTextToText.from_pretrained(DIR)` and `AutoProcessor.from_pretrained(DIR)`,
run on the inputs (safetensors, as vlaunch encoded them), and `result` gets `logits`. The last
line printed is a JSON object: per export, the model and processor classes.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from typing import Any

BLOCKED = ("launcher", "trainer", "vlaunch_core")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".", maxsplit=1)[0] in BLOCKED:
            raise ImportError(f"{name} must not be needed to load an export")
        return None


def main() -> None:
    sys.meta_path.insert(0, _Blocker())
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    models: dict[str, Any] = {}
    classes: dict[str, dict[str, str]] = {}
    for job in jobs:
        folder = job["export"]
        if folder not in models:
            models[folder] = AutoModelForImageTextToText.from_pretrained(folder).eval()
            processor = AutoProcessor.from_pretrained(folder)
            classes[folder] = {
                "model": type(models[folder]).__name__,
                "processor": type(processor).__name__,
            }
        with torch.no_grad():
            logits = models[folder](**load_file(job["inputs"]), use_cache=False).logits
        save_file({"logits": logits.contiguous()}, job["result"])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print(json.dumps(classes))


if __name__ == "__main__":
    main()
