"""Run-time guard rails: host RSS per rank in the metrics, and one loud early warning that
names the likely cause when the node's available memory runs low."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from trainer.data.build import loader_settings
from trainer.dist import DistEnv
from trainer.hostmem import (
    HostMemoryGuard,
    Observation,
    likely_cause,
    node_memory,
    process_rss,
    release_free_memory,
)
from trainer.metrics import MetricsWriter
from trainer.rundir import RunDir
from vlaunch_core.host_memory import GIB
from vlaunch_core.plan import make_plan
from vlaunch_core.spec_load import load_spec

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_record_has_this_ranks_rss_and_the_nodes_available_memory() -> None:
    guard = HostMemoryGuard(ENV, strategy="ddp", low_memory_loading=False)
    record = guard.record()
    rss = process_rss()
    assert len(record["host_rss_gib_per_rank"]) == 1
    assert 0.5 * rss / GIB < record["host_rss_gib"] < 2 * rss / GIB
    total, _ = node_memory()
    assert 0 < record["host_available_gib"] <= total / GIB
    assert record["host_workers_gib"] >= 0
    assert guard.phase == "training"


def test_warns_once_loudly_with_cause_and_fix(caplog: pytest.LogCaptureFixture) -> None:
    # a threshold above 100% of RAM: this node is "low" whatever it has free
    guard = HostMemoryGuard(ENV, strategy="zero2", low_memory_loading=False, warn_below=1.01)
    with caplog.at_level(logging.WARNING, logger="trainer.hostmem"):
        assert guard.check()
        assert not guard.check()
    warnings = [r.getMessage() for r in caplog.records if "HOST MEMORY LOW" in r.getMessage()]
    assert len(warnings) == 1
    assert "during loading" in warnings[0]
    assert "every rank on this node loads a full copy of the model" in warnings[0]
    assert "train.strategy=zero3 or fsdp" in warnings[0]
    quiet = HostMemoryGuard(ENV, strategy="ddp", low_memory_loading=False, warn_below=0.0)
    assert not quiet.check()


def test_the_watcher_thread_warns_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    guard = HostMemoryGuard(ENV, strategy="fsdp", low_memory_loading=True, warn_below=1.01)
    with caplog.at_level(logging.WARNING, logger="trainer.hostmem"):
        guard.start()
        try:
            assert guard.warned.wait(timeout=30)
        finally:
            guard.stop()
    assert "HOST MEMORY LOW" in caplog.text


@pytest.mark.parametrize(
    ("workers", "strategy", "ranks", "expected"),
    [
        (20 * GIB, "zero3", [4 * GIB], "data-loader workers"),
        (0, "offload", [30 * GIB], "ZeRO offload"),
        (0, "fsdp", [2 * GIB], "other processes on this node use 38.0 GiB"),
        (0, "fsdp", [35 * GIB], "the training processes"),
    ],
)
def test_likely_cause(workers: int, strategy: str, ranks: list[int], expected: str) -> None:
    obs = Observation(
        phase="training",
        total=64 * GIB,
        available=24 * GIB,
        ranks_rss=ranks,
        workers=workers,
        strategy=strategy,
        low_memory_loading=True,
        host=None,
    )
    cause, fix = likely_cause(obs)
    assert expected in cause and fix


def test_auto_loader_settings_follow_the_plan(
    tmp_path: Path, shapes_small: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.trainer.helpers import write_job

    spec = load_spec(write_job(tmp_path, shapes_small, data={"num_workers": "auto"}))
    plan = make_plan(spec)
    assert plan.host_memory is not None and plan.host_memory.loader.auto
    with caplog.at_level(logging.INFO, logger="trainer.data.build"):
        got = loader_settings(spec, plan, local_world_size=2)
    assert got["num_workers"] is not None
    assert got["num_workers"] <= plan.host_memory.loader.num_workers
    assert got["prefetch_factor"] == plan.host_memory.loader.prefetch_factor
    assert "data.num_workers=auto" in caplog.text
    fixed = load_spec(write_job(tmp_path, shapes_small, data={"num_workers": 3}))
    assert loader_settings(fixed, make_plan(fixed), 2) == {"num_workers": 3, "prefetch_factor": 2}
    # one worker, accumulation 4: the plan's prefetch holds a whole step
    one = load_spec(
        write_job(
            tmp_path,
            shapes_small,
            data={"num_workers": 1},
            train={"micro_batch_size": 1, "grad_accum_steps": 4},
        )
    )
    one_plan = make_plan(one)
    assert one_plan.batch.grad_accum_steps == 4
    assert loader_settings(one, one_plan, 2) == {"num_workers": 1, "prefetch_factor": 4}


def test_per_rank_lists_are_written_to_metrics(tmp_path: Path, shapes_small: Path) -> None:
    from tests.trainer.helpers import write_job

    spec = load_spec(write_job(tmp_path, shapes_small, tracking={"tensorboard": False}))
    writer = MetricsWriter(RunDir(tmp_path / "run"), spec, start_step=0)
    writer.log({"kind": "train", "step": 1, "host_rss_gib_per_rank": [1.5, 1.25]})
    writer.close()
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert line["host_rss_gib_per_rank"] == [1.5, 1.25]
    release_free_memory()  # never fails, with or without glibc
