"""Fixtures of the after-training tests: one demo-like run per session, tiny-model runs.

The demo-like run is the demo's job made smaller (tiny LLaVA, `lora_llm`, 160 shapes images,
50 steps of 16, two CPU ranks under torchrun with DDP, held-out evaluation before and after):
it learns the colour question well above chance but not perfectly, so an evaluation that
differs in any way from the run's own would show.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainer.helpers import explain, make_shapes, run_trainer, write_job


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory, tiny_llava: Path) -> Path:
    """160 + 40 shapes images (and the tiny LLaVA the runs on them train, built first)."""
    return make_shapes(tmp_path_factory.mktemp("shapes"), train=160, eval_=40)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, shapes: Path) -> Path:
    """A finished demo-like run directory (trained once per session)."""
    folder = tmp_path_factory.mktemp("demo")
    job = write_job(
        folder,
        shapes,
        name="demo",
        data={"eval_mixture": "shapes_eval"},
        train={
            "max_steps": 50,
            "checkpoint_every": 25,
            "global_batch_size": 16,
            "micro_batch_size": 8,
        },
    )
    proc = run_trainer(job, nproc=2)
    assert proc.returncode == 0, explain(proc)
    return folder / "runs" / "demo"
