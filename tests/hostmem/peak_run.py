"""Run one job under torchrun and record each rank's memory: `torchrun --nproc_per_node 2
peak_run.py JOB.yaml OUT_DIR [--setup-only] [key=value ...]` writes `OUT_DIR/rank<r>.json`
with RSS numbers in bytes (from /proc/self/status): `start` (after imports), `loading_peak`
(high-water mark of setup: model, tuning, sharding, data), `run_peak` (high-water mark of the
whole run; the loading peak with `--setup-only`).

The high-water mark is reset after the imports (`/proc/self/clear_refs` = 5), so the peaks
are those of loading and training, not of importing torch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def main() -> None:
    job, out, *overrides = sys.argv[1:]
    setup_only = "--setup-only" in overrides
    overrides = [o for o in overrides if o != "--setup-only"]
    import deepspeed  # noqa: F401  (imported before the baseline like every other library)
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from trainer.loop import Recipe
    from vlaunch_core.spec_load import load_spec

    spec = load_spec(job, list(overrides))
    rank = int(os.environ.get("RANK", "0"))
    Path("/proc/self/clear_refs").write_text("5")
    start = status_bytes("VmRSS")
    recipe = Recipe(spec, quiet=True)
    try:
        recipe.setup()
        loading_peak = status_bytes("VmHWM")
        if not setup_only:
            result = recipe.train()
            assert result.state == "finished", result
    finally:
        recipe.cleanup()
    record = {
        "start": start,
        "loading_peak": loading_peak,
        "run_peak": status_bytes("VmHWM"),
        "world_size": recipe.env.world_size,
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
    from trainer.dist import exit_rank

    exit_rank(0)  # a torchrun rank: no finalization (see exit_rank)
