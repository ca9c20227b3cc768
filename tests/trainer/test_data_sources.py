"""Training on every source format, and exact resume over them (below Ray: in process and
torchrun; one `vlaunch local` run in tests/e2e/test_ray_runs.py).

The mixture holds one dataset of each kind, built by each format's own writer
(tests/data/source_fixtures.py): Parquet shards, a `save_to_disk` DatasetDict, a hub dataset
in a temporary Hugging Face cache (`source: hf`) and WebDataset tar shards, each with embedded
and referenced images and one video; the tiny Qwen2-VL (it takes videos) trains LoRA on it.

- the straight run (this process, one rank, 4 steps) reads from every dataset;
- a run SIGKILLed after step 3 (`python -m trainer.run`, one rank) resumes from its step-2
  checkpoint to exactly the straight run's weights, bit for bit;
- the same killed run resumed on two ranks (torchrun, gloo) trains on exactly the same
  samples (target tokens of every step) to exactly the same weights and losses, bit for bit:
  the job sets `train.deterministic`, under which every micro batch's gradient is summed
  over the ranks in the global micro-batch order (not DDP's per-rank sums, whose order
  depends on the world size) and LoRA dropout (on, at its default) is seeded per micro batch
  (`trainer/deterministic.py`);
- `vlaunch convert` of an fms-hf-tuning config naming `HuggingFaceH4/llava-instruct-mix-vsft`
  trains against a local copy of that dataset with the same schema.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.data.source_fixtures import BUILDERS, build, build_llava_mix
from tests.trainer.helpers import (
    explain,
    max_abs_diff,
    records,
    run_trainer,
    trained_weights,
    write_job,
)

pytestmark = pytest.mark.slow

STEPS = 4
MIXTURE = "+".join(BUILDERS)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The shapes, one clean dataset of each kind, the hub cache they use, the tiny model."""
    import huggingface_hub.constants

    from trainer.models.tiny.folder import tiny_model_path
    from vlaunch_core.data.synth import SynthSizes, synthesize

    root = tmp_path_factory.mktemp("sources")
    shapes = root / "shapes"
    synthesize(shapes, SynthSizes(train=24, eval=4, video_train=2, video_eval=1), seed=5)
    built = {kind: build(kind, shapes, root) for kind in BUILDERS}
    hf_home = root / "hf_home"
    build_llava_mix(shapes, hf_home)
    tiny_model_path("qwen2_vl")  # built once, before rank processes start
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_home / "hub"))
        yield {"shapes": shapes, "built": built, "hf_home": hf_home}


def _job(folder: Path, sources: dict[str, Any]) -> Path:
    return write_job(
        folder,
        sources["shapes"],
        name="run",
        model={"name_or_path": "tiny:qwen2_vl"},
        data={
            "datasets": {kind: b.entry for kind, b in sources["built"].items()},
            "mixture": MIXTURE,
            "video": {"num_frames": 2},
            "max_length": 512,
        },
        # LoRA dropout at its default (0.05): seeded per micro batch under train.deterministic
        tuning={"preset": "lora_llm"},
        train={
            "max_steps": STEPS,
            "checkpoint_every": 2,
            "warmup_steps": 0,
            "deterministic": True,  # bit for bit also on another number of ranks
        },
        resources={"profile": "cpu", "gpus_per_node": 2},
    )


def _env(sources: dict[str, Any]) -> dict[str, str]:
    return {"HF_HOME": str(sources["hf_home"]), "HF_DATASETS_OFFLINE": "1"}


def _in_process(job: Path) -> Any:
    import torch

    from trainer.loop import Recipe
    from vlaunch_core.spec_load import load_spec

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the child processes (OMP_NUM_THREADS=1)
    recipe = Recipe(load_spec(job), quiet=True)
    try:
        recipe.setup()
        result = recipe.train()
    finally:
        recipe.cleanup()
        torch.set_num_threads(threads)
    return recipe, result


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, sources: dict[str, Any]) -> Path:
    """4 steps in this process (one rank); returns the run directory."""
    job = _job(tmp_path_factory.mktemp("straight"), sources)
    recipe, result = _in_process(job)
    assert (result.state, result.step) == ("finished", STEPS)
    # Every dataset of the mixture is read in these steps.
    data = recipe.train_data
    order = data.sampler.epoch_order(0)[: STEPS * 8]
    parts = {data.dataset.parts[data.dataset.locate(int(i))[0]].dataset.name for i in order}
    assert parts == set(BUILDERS)
    # A resume at step 2 goes on with the tar shards at the shard and offset of the first
    # tar sample the resumed sampler yields.
    data.sampler.start_at(2)
    tar = next(k for k, p in enumerate(data.dataset.parts) if p.dataset.name == "webdataset")
    first = next(
        j for batch in data.sampler for i in batch for k, j in [data.dataset.locate(i)] if k == tar
    )
    shard, index = data.resume_positions(2)["webdataset"]
    assert (shard, index) == data.dataset.parts[tar].source.where(first)
    assert shard.endswith(".tar")
    kinds = {p.dataset.name: p.source.kind for p in data.dataset.parts}
    assert kinds == {
        "parquet": "parquet",
        "save_to_disk": "arrow",
        "hub": "parquet",  # read in place from the cached snapshot
        "webdataset": "webdataset",
    }
    return result.run_dir


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory, sources: dict[str, Any]) -> Path:
    """The same job on one rank, SIGKILLed right after step 3; returns the job file."""
    job = _job(tmp_path_factory.mktemp("killed"), sources)
    proc = run_trainer(job, VLAUNCH_FAULT="kill:0:3", **_env(sources))
    assert proc.returncode != 0, explain(proc)
    run = job.parent / "runs" / "run"
    assert (run / ".fault-kill-0-3").is_file(), explain(proc)
    assert [p.name for p in sorted(run.glob("checkpoint_*"))] == ["checkpoint_000002"]
    return job


def _copy(job: Path, dest: Path) -> Path:
    shutil.copytree(job.parent, dest)
    copy = dest / job.name
    copy.write_text(job.read_text().replace(str(job.parent), str(dest)))
    return copy


def test_killed_run_resumes_to_the_same_weights_bit_for_bit(
    straight: Path, killed: Path, sources: dict[str, Any], tmp_path: Path
) -> None:
    job = _copy(killed, tmp_path / "resume")
    proc = run_trainer(job, **_env(sources))
    assert proc.returncode == 0, explain(proc)
    run = job.parent / "runs" / "run"
    assert [r["step"] for r in records(run, "resume")] == [2]
    want = trained_weights(straight / f"checkpoint_{STEPS:06d}")
    got = trained_weights(run / f"checkpoint_{STEPS:06d}")
    assert want.keys() == got.keys()
    assert all(bool((want[k] == got[k]).all()) for k in want), max_abs_diff(want, got)
    assert [(r["step"], r["loss"]) for r in records(run)] == [
        (r["step"], r["loss"]) for r in records(straight)
    ]


def test_resume_on_two_ranks_reads_the_same_samples(
    straight: Path, killed: Path, sources: dict[str, Any], tmp_path: Path
) -> None:
    job = _copy(killed, tmp_path / "two-ranks")
    proc = run_trainer(job, nproc=2, **_env(sources))
    assert proc.returncode == 0, explain(proc)
    run = job.parent / "runs" / "run"
    (resume,) = records(run, "resume")
    assert (resume["step"], resume["world_size"]) == (2, 2)
    want = {r["step"]: r for r in records(straight)}
    got = {r["step"]: r for r in records(run)}
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert got[step]["target_tokens"] == want[step]["target_tokens"]
        assert got[step]["loss"] == want[step]["loss"], step
        assert got[step]["grad_norm"] == want[step]["grad_norm"], step
    want_w = trained_weights(straight / f"checkpoint_{STEPS:06d}")
    got_w = trained_weights(run / f"checkpoint_{STEPS:06d}")
    diff = max_abs_diff(want_w, got_w)
    print(f"\nmax abs diff, one rank straight vs resumed on two ranks: {diff:.3g}")
    assert want_w.keys() == got_w.keys()
    assert all(bool((want_w[k] == got_w[k]).all()) for k in want_w), diff


def test_converted_fms_config_trains_on_a_local_copy_of_the_hub_dataset(
    sources: dict[str, Any], tmp_path: Path
) -> None:
    from launcher.convert import convert, read_settings

    fms = {
        "model_name_or_path": "llava-hf/llava-1.5-7b-hf",
        "training_data_path": "HuggingFaceH4/llava-instruct-mix-vsft",
        "dataset_text_field": "messages",
        "dataset_image_field": "images",
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "learning_rate": 1e-4,
        "num_train_epochs": 1,
    }
    args = tmp_path / "fms.json"
    args.write_text(json.dumps(fms))
    spec = convert(read_settings(args)).spec
    entry = spec["data"]["datasets"]["train"]
    assert entry == {
        "data_path": "HuggingFaceH4/llava-instruct-mix-vsft",
        "source": "hf",
        "split": "train",
        "format": "messages",
        "text_field": "messages",
        "image_field": "images",
    }
    assert spec["data"]["mixture"] == "train"
    # Train it small: the tiny LLaVA, two steps, on the local copy in the HF cache.
    job = write_job(
        tmp_path,
        sources["shapes"],
        name="fms",
        data={"datasets": spec["data"]["datasets"], "mixture": spec["data"]["mixture"]},
        train={"max_steps": 2, "checkpoint_every": 2, "global_batch_size": 4},
        resources={"profile": "cpu", "gpus_per_node": 1},
    )
    _, result = _in_process(job)
    assert (result.state, result.step) == ("finished", 2)
    assert all(r["target_tokens"] > 0 for r in records(result.run_dir))
