"""`vlaunch plan`'s host-memory prediction: the seed team's 8B VLM on 2 x RTX 3090 Ti with
64 GB of RAM (seed 001), what changes it, and the advice when it does not fit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.cli import main
from vlaunch_core.host_memory import (
    CPU_RANK_BYTES,
    GIB,
    HostMemoryEstimate,
    choose_loader,
    estimate_host_memory,
    worker_bytes,
)
from vlaunch_core.models.configs import arch_config
from vlaunch_core.plan import Plan, make_plan, model_facts, training_setup
from vlaunch_core.spec import JobSpec
from vlaunch_core.spec_load import load_spec

REGISTRY = Path(__file__).resolve().parents[2] / "examples" / "registry.yaml"


def seed_job(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """The seed team's setup: NVILA-8B-class VLM (here Idefics3-8B: Llama-3-8B + SigLIP),
    LoRA on the language model, ZeRO-3, 16 data-loader workers per rank (their default),
    4096 tokens, 2 x RTX 3090 Ti with 64 GB of RAM (the `rtx3090ti` profile)."""
    model_dir = tmp_path / "idefics3-8b"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(arch_config("idefics3-8b")))
    job: dict[str, Any] = {
        "name": "seed001",
        "model": {"name_or_path": str(model_dir)},
        "data": {
            "registry": [str(REGISTRY)],
            "mixture": "shapes_train",
            "max_length": 4096,
            "num_workers": 16,
        },
        "tuning": {"preset": "lora_llm", "lora": {"r": 16}},
        "train": {
            "global_batch_size": 2,
            "micro_batch_size": 1,
            "strategy": "zero3",
            "gradient_checkpointing": True,
        },
        "resources": {"profile": "rtx3090ti"},
    }
    for section, values in sections.items():
        job.setdefault(section, {}).update(values)
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def host_of(plan: Plan) -> HostMemoryEstimate:
    assert plan.host_memory is not None
    return plan.host_memory


def show(label: str, h: HostMemoryEstimate) -> None:
    parts = {k: round(v / GIB, 2) for k, v in h.parts.items()}
    print(
        f"\n[{label}] loading {h.loading / GIB:.1f} GiB, training {h.training / GIB:.1f} GiB, "
        f"node RAM {h.node_ram / GIB:.0f} GiB, fits={h.fits}, parts={parts}, advice={h.advice}"
    )


def test_seed_setup_fits_with_low_memory_loading(tmp_path: Path) -> None:
    spec = load_spec(seed_job(tmp_path))
    plan = make_plan(spec)
    h = host_of(plan)
    show("seed 001 as vlaunch runs it", h)
    assert plan.world.profile.host_memory_gib == 64
    assert plan.memory is not None and plan.memory.fits
    assert h.low_memory_loading and h.fits and plan.fits
    assert h.loader.num_workers == 16 and not h.loader.auto
    # Without low-memory loading each rank would first hold the whole bf16 model (15.8 GiB).
    full = _estimate(spec, low_memory=False)
    show("seed 001, every rank loads a full copy", full)
    params = plan.memory.total_params
    assert full.parts["model_loading"] >= 2 * params * 2
    assert h.parts["model_loading"] < 0.6 * full.parts["model_loading"]
    assert h.loading < full.loading


def test_heavy_workers_do_not_fit_and_the_advice_fixes_it(tmp_path: Path) -> None:
    # 16 workers per rank at 2 GiB each (high-resolution tiles and a Python sample list that
    # every worker copies on write, as in the seed team's data loader)
    job = seed_job(tmp_path, data={"worker_memory_mib": 2048})
    plan = make_plan(load_spec(job))
    h = host_of(plan)
    show("seed 001 with 2 GiB workers", h)
    assert not h.fits and not plan.fits and h.peak_phase == "training"
    assert h.parts["data_workers"] == 2 * 16 * 2 * GIB
    first = re.match(r"data\.num_workers=(\d+) ", h.advice[0])
    assert first is not None, h.advice
    fixed = int(first.group(1))
    assert 0 < fixed < 16
    assert "swap" in h.advice[-1]
    assert any("host memory does not fit" in n for n in plan.notes)
    assert host_of(make_plan(load_spec(job, [f"data.num_workers={fixed}"]))).fits
    assert not host_of(make_plan(load_spec(job, [f"data.num_workers={fixed + 1}"]))).fits
    auto = host_of(make_plan(load_spec(job, ["data.num_workers=auto"])))
    assert auto.fits and auto.loader.auto and 0 < auto.loader.num_workers <= fixed
    assert "auto: 16 cores / 2 rank(s)" in auto.loader.reason


def test_a_full_copy_per_rank_does_not_fit_a_32gb_node(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(
        yaml.safe_dump(
            {
                "rtx3090ti-32gb": {
                    "gpu_memory_mib": 24564,
                    "gpus_per_node": 2,
                    "host_memory_gib": 32,
                    "cpus_per_node": 16,
                }
            }
        )
    )
    resources = {"profile": "rtx3090ti-32gb", "profiles": [str(profiles)]}
    job = seed_job(tmp_path, resources=resources, data={"num_workers": 2})
    zero2 = host_of(make_plan(load_spec(job, ["train.strategy=zero2"])))
    show("32 GB node, zero2 (no low-memory loading)", zero2)
    assert not zero2.fits and zero2.peak_phase == "loading" and not zero2.low_memory_loading
    assert zero2.advice[0].startswith("train.strategy=zero3 or fsdp")
    zero3 = host_of(make_plan(load_spec(job)))
    show("32 GB node, zero3", zero3)
    assert zero3.fits and zero3.low_memory_loading


def test_offloading_a_full_fine_tune_advises_offload_off(tmp_path: Path) -> None:
    job = seed_job(tmp_path, data={"num_workers": 2})
    h = host_of(make_plan(load_spec(job, ["train.strategy=offload", "tuning.preset=fft"])))
    show("seed 001, full fine-tuning with offload", h)
    # Adam moments + fp32 masters + fp32 gradients: 16 bytes per parameter, over the node
    assert h.parts["optimizer_offload"] >= 16 * 8_000_000_000
    assert not h.fits
    assert any("offload off" in a for a in h.advice)


def test_the_cpu_profile_counts_device_memory_once(tmp_path: Path, shapes_small: Path) -> None:
    from tests.trainer.helpers import write_job

    job = write_job(tmp_path, shapes_small, data={"num_workers": 1})
    plan = make_plan(load_spec(job))
    h, m = host_of(plan), plan.memory
    assert m is not None and plan.world.profile.name == "cpu"
    ranks = plan.world.gpus_per_node
    assert h.parts["processes"] == ranks * CPU_RANK_BYTES
    # the device estimate (minus its per-process overhead, which is the baseline) is host RAM
    assert h.parts["training_state"] == ranks * (m.total - m.parts["overhead"])
    assert h.training == sum(
        h.parts[k]
        for k in (
            "processes",
            "ray",
            "training_state",
            "allocator_slack",
            "data_workers",
            "pinned_batches",
        )
    )
    assert h.parts["pinned_batches"] == 0  # no pinned memory without a GPU


def test_auto_workers_follow_cores_then_ram(tmp_path: Path, shapes_small: Path) -> None:
    from tests.trainer.helpers import write_job

    spec = load_spec(write_job(tmp_path, shapes_small, data={"num_workers": "auto"}))
    roomy, each = choose_loader(spec, cores=32, ranks_per_node=2, budget=100 * GIB, batch=0)
    assert roomy.num_workers == 4 and "limited by cores" in roomy.reason
    tight, _ = choose_loader(spec, cores=32, ranks_per_node=2, budget=4 * each, batch=0)
    assert tight.num_workers == 2 and "limited by host RAM" in tight.reason
    none, _ = choose_loader(spec, cores=2, ranks_per_node=2, budget=100 * GIB, batch=0)
    assert none.num_workers == 0


def test_auto_prefetch_holds_an_optimizer_step_where_ram_allows(
    tmp_path: Path, shapes_small: Path
) -> None:
    """The trainer takes a step's micro batches at once: the workers' prefetch covers them."""
    from tests.trainer.helpers import write_job

    spec = load_spec(write_job(tmp_path, shapes_small, data={"num_workers": "auto"}))
    step, each = choose_loader(
        spec, cores=32, ranks_per_node=2, budget=100 * GIB, batch=GIB // 8, accum=16
    )
    assert (step.num_workers, step.prefetch_factor) == (4, 4)
    assert "prefetch 4 holds a step's 16 micro batches" in step.reason
    assert each == worker_bytes(spec, GIB // 8, 4)
    few, _ = choose_loader(spec, cores=32, ranks_per_node=2, budget=100 * GIB, batch=0, accum=3)
    assert few.prefetch_factor == 2  # never below the default
    two = worker_bytes(spec, GIB // 8, 2)
    tight, _ = choose_loader(
        spec, cores=32, ranks_per_node=2, budget=8 * two, batch=GIB // 8, accum=16
    )
    assert (tight.num_workers, tight.prefetch_factor) == (4, 2)  # RAM: not a whole step
    one = load_spec(write_job(tmp_path, shapes_small, data={"num_workers": 1}))
    fixed, _ = choose_loader(spec=one, cores=2, ranks_per_node=1, budget=0, batch=0, accum=4)
    assert (fixed.num_workers, fixed.prefetch_factor) == (1, 4)
    told = load_spec(
        write_job(tmp_path, shapes_small, data={"num_workers": 1, "prefetch_factor": 3})
    )
    told_choice, _ = choose_loader(told, cores=2, ranks_per_node=1, budget=0, batch=0, accum=8)
    assert told_choice.prefetch_factor == 3


def test_plan_command_prints_and_exports_host_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = seed_job(tmp_path, data={"worker_memory_mib": 2048})
    assert main(["plan", str(job), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)["host_memory"]
    assert out["fits"] is False and out["node_ram_bytes"] == 64 * GIB
    assert out["total_bytes"] == max(out["loading_bytes"], out["training_bytes"])
    assert set(out["parts_bytes"]) >= {"processes", "model_loading", "data_workers", "ray"}
    assert out["advice"] and out["num_workers"] == 16
    assert main(["plan", str(job)]) == 1
    text = capsys.readouterr().out
    assert "host memory per node" in text and "does not fit" in text


def _estimate(spec: JobSpec, *, low_memory: bool) -> HostMemoryEstimate:
    plan = make_plan(spec)
    facts = model_facts(spec)
    setup = training_setup(spec, facts, plan.world, plan.precision, plan.batch.micro_batch_size)
    return estimate_host_memory(
        spec, plan.world, facts.table, facts.shape, setup, plan.memory, low_memory=low_memory
    )
