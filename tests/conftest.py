"""Shared test setup: offline hub, quiet Ray, GPU tests skipped without CUDA."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


def _cuda_available() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("gpu" in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This test session's own vlaunch cache (VLAUNCH_CACHE): tiny models are built here on
    first use, so tests never depend on ~/.cache/vlaunch; child processes (ranks, Ray
    workers, Slurm jobs) inherit it. Concurrent first uses are safe (tiny_model_path)."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("vlaunch-cache")
        mp.setenv("VLAUNCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def tiny_llava(model_cache: Path) -> Path:
    """The tiny LLaVA that the training tests' jobs use (`tiny:llava`), built by this process
    before their rank processes start (they would otherwise all build it at once)."""
    from trainer.models.tiny.folder import tiny_model_path

    return tiny_model_path("llava")


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory: pytest.TempPathFactory, tiny_llava: Path) -> Path:
    """A small synthetic shapes dataset with its registry, shared by the session (the tiny
    LLaVA the jobs on it train is built too)."""
    from tests.trainer.helpers import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def strategy_runs(tmp_path_factory: pytest.TempPathFactory, shapes_data: Path) -> Path:
    """One job trained 3 steps in one process (`runs/single`) and on 2 ranks under every
    strategy (`runs/run_<strategy>`, one torchrun launch), checkpoint at step 3: shared by the
    strategy comparison (tests/trainer/test_strategies.py) and the checkpoint attacks
    (tests/hostile/test_checkpoints.py). The single run takes the plain loss (full logits), the
    two-rank runs the chunked one (strategy_runs.py). Slow: use it from `slow` tests only."""
    from tests.trainer.helpers import explain, run_trainer, torchrun, write_job

    folder = tmp_path_factory.mktemp("strategies")
    job = write_job(
        folder,
        shapes_data,
        name="single",
        tuning={"preset": "lora_llm", "lora": {"dropout": 0.0}},
        train={"max_steps": 3, "checkpoint_every": 3, "loss": "plain"},
        output={"dir": str(folder / "runs"), "export": "none"},
    )
    single = run_trainer(job, nproc=1)
    assert single.returncode == 0, explain(single)
    script = REPO / "tests" / "trainer" / "strategy_runs.py"
    strategies = ("ddp", "fsdp", "zero2", "zero3", "offload")
    proc = torchrun(str(script), str(job), *strategies, cwd=folder, timeout=900)
    assert proc.returncode == 0, explain(proc)
    return folder / "runs"
