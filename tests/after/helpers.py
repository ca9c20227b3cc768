"""Helpers of the after-training tests: the CLI in this process, one-off training runs."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from tests.trainer.helpers import write_job


def cli(*args: str) -> tuple[int, str, str]:
    """`vlaunch ARGS` in this process (the real entry point, without interpreter start-up):
    exit code, stdout, stderr."""
    from launcher.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def train_here(folder: Path, shapes: Path, name: str, **sections: Any) -> Path:
    """Train a tiny job in this process (world 1, fp32) and return its run directory."""
    import torch

    from trainer.loop import train
    from vlaunch_core.spec_load import load_spec

    defaults: dict[str, Any] = {
        "train": {
            "max_steps": 2,
            "checkpoint_every": 2,
            "global_batch_size": 4,
            "micro_batch_size": 2,
        },
        "resources": {"profile": "cpu", "gpus_per_node": 1},
    }
    for key, value in sections.items():
        defaults[key] = {**defaults.get(key, {}), **value}
    job = write_job(folder, shapes, name=name, **defaults)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on a busy 2-core box
    try:
        result = train(load_spec(job), quiet=True)
    finally:
        torch.set_num_threads(threads)
    assert result.state == "finished", result
    return result.run_dir
