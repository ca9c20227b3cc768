"""Exports of FSDP and ZeRO-3 runs (two CPU ranks, gloo, torchrun): whole LoRA tensors.

Sharded strategies hold each rank's slice of a parameter (FSDP: DTensor shards; ZeRO-3:
flattened partitions, 0-element placeholders outside a gather). An adapter written from those
without gathering has empty or 1-D LoRA tensors (vllm#28640). Here every tensor of the
exported adapters must be whole: 2-D LoRA matrices of (r, in) / (out, r) as in the base
model, modules_to_save as the base module's weights; the two runs (same job, dropout 0) agree
with each other and with the job run in one process (within the bound derived in
`test_sharded_runs_agree_and_merge`), and the merged exports reproduce base + adapter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.after.helpers import cli
from tests.trainer.helpers import REPO, explain, run_trainer, torchrun, write_job

STRATEGIES = ("fsdp", "zero3")
# How far two runs of the job may end apart (derived in test_sharded_runs_agree_and_merge):
WORST = 2e-3  # any element, at most
ROUNDING = 1e-5  # ... and at most 1% of the elements more than this


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory: pytest.TempPathFactory, shapes: Path) -> Path:
    folder = tmp_path_factory.mktemp("sharded")
    job = write_job(
        folder,
        shapes,
        name="sharded",
        tuning={"preset": "lora_vt_llm", "lora": {"dropout": 0.0}},
        train={"max_steps": 2, "checkpoint_every": 2, "lr": 1e-2},
    )
    proc = torchrun(
        str(REPO / "tests" / "trainer" / "strategy_runs.py"), str(job), *STRATEGIES, cwd=folder
    )
    assert proc.returncode == 0, explain(proc)
    single = run_trainer(job, "name=run_single")  # the reference: one process, no sharding
    assert single.returncode == 0, explain(single)
    return folder / "runs"


def _base_state() -> dict[str, Any]:
    from trainer.models.loading import load_model
    from vlaunch_core.spec import ModelSpec

    return dict(load_model(ModelSpec(name_or_path="tiny:llava")).model.state_dict())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_adapter_of_a_sharded_run_is_whole(
    sharded_runs: Path, tmp_path: Path, strategy: str
) -> None:
    from safetensors.torch import load_file

    from trainer.adapter_export import module_of_key

    out = tmp_path / "adapter"
    code, _, err = cli("export", str(sharded_runs / f"run_{strategy}"), "--adapter-only", str(out))
    assert code == 0, err
    tensors = load_file(str(out / "adapter_model.safetensors"))
    config = json.loads((out / "adapter_config.json").read_text())
    base = _base_state()
    kinds = {"lora_A": 0, "lora_B": 0, "full": 0}
    for key, t in tensors.items():
        assert t.numel() > 0, key
        module, kind = module_of_key(key)
        weight = base[f"{module}.weight"] if kind else base[module + "." + key.rsplit(".", 1)[1]]
        if kind == "lora_A":
            assert tuple(t.shape) == (config["r"], weight.shape[1]), key
        elif kind == "lora_B":
            assert tuple(t.shape) == (weight.shape[0], config["r"]), key
        else:
            assert t.shape == weight.shape, key
        kinds[kind or "full"] += 1
    print(f"\n{strategy}: {len(tensors)} tensors whole: {kinds}")
    assert kinds["lora_A"] == kinds["lora_B"] > 0 and kinds["full"] > 0
    vision = [k for k in tensors if ".vision_tower." in k and "lora_" in k]
    assert vision  # the vision tower's LoRA was gathered too


def test_sharded_runs_agree_and_merge(sharded_runs: Path, shapes: Path, tmp_path: Path) -> None:
    """FSDP, ZeRO-3 and one process agree: every element within 2e-3, at most 1% of the
    elements more than 1e-5 apart (seeds 1-12: at most 1.9e-4, and 17 of 119040). A ZeRO-3
    run with weight_decay 0.01 (eps 1e-6) fails: 5917 (72101) elements past 1e-5.

    Why they differ (seed 7: fsdp vs zero3 9.0e-5, fsdp vs one process 1.2e-5): the same
    forward (bitwise) and the same AdamW (every update matches torch's formula to 2e-8),
    but gradients summed in other orders. ZeRO-3 hooks every submodule, which changes the
    order in which autograd adds up an activation's gradients (FSDP's micro-batch
    gradients are DDP's bit for bit), and it reduces every micro batch where FSDP reduces
    once. A sum moves by a few ulps of its partial sums; where they cancel to below
    eps = 1e-8 (clipped), AdamW's update lr * g / (|g| + eps) amplifies that by up to
    lr / eps. v_proj.lora_B[0,2], step 1: micro-batch gradients up to 3.2e-3 sum to 5.0e-8
    (6.6e-9 clipped), ZeRO-3's sum is 2^-30 off: 2.2e-5 in the weight. q_proj.lora_A[8,114]
    (B = 0 at step 1, so A's first gradient comes at step 2): 2.18e-9 vs 1.96e-9 clipped,
    updates 9.96e-4 vs 9.05e-4.

    Bound: the update's slope in the clipped gradient is at most 1/eps at step 1 and, at
    step 2, 1.18/eps in the step-1 and 1.24/eps in the step-2 gradient, so gradients d
    apart end at most (lr1 + 2.42 lr2) d / eps = 2.9e6 d apart (lr1 = 5e-3, lr2 = 1e-2).
    Measured d <= 3.2e-10 where |g| < 10 eps; with each element's own slopes and d the
    bound is <= 2.5e-4; 2e-3 allows d = 6.9e-10 at the steepest slope. Away from eps the
    slope is ~lr / |g|: d being ~1e-7 of partial sums of a few 1e-3, elements whose
    gradients stay >= 1e-6 (100 eps) move ~4e-6 at most (measured <= 2e-6); only the
    others (0.87% of the elements here) may move more than 1e-5.
    """
    import torch
    from safetensors.torch import load_file

    from trainer.infer import Predictor, single_prompt
    from trainer.trained import load_trained, resolve

    runs = {
        name: load_file(str(sharded_runs / f"run_{name}" / "adapter" / "adapter_model.safetensors"))
        for name in (*STRATEGIES, "single")
    }
    for x, y in (("fsdp", "zero3"), ("fsdp", "single"), ("zero3", "single")):
        a, b = runs[x], runs[y]
        assert a.keys() == b.keys()
        diffs = [(a[k].double() - b[k].double()).abs() for k in a]
        worst = max(float(d.max()) for d in diffs)
        apart = sum(int((d > ROUNDING).sum()) for d in diffs)
        total = sum(d.numel() for d in diffs)
        print(f"\n{x} vs {y}: max abs diff {worst:.2g}, {apart} of {total} above {ROUNDING:g}")
        assert worst <= WORST, (x, y, worst)
        assert apart <= 0.01 * total, (x, y, apart, total)
    image = sorted((shapes / "images").glob("eval_*.png"))[0]
    for strategy in STRATEGIES:
        run = sharded_runs / f"run_{strategy}"
        merged = tmp_path / f"merged-{strategy}"
        code, _, err = cli("export", str(run), "--merge", str(merged))
        assert code == 0, err
        ref = Predictor(load_trained(resolve(run)))
        inputs = ref.inputs(single_prompt("What colour?", images=[image]))
        plain = Predictor(load_trained(resolve(merged)))
        with torch.no_grad():
            diff = (ref.model(**inputs).logits - plain.model(**inputs).logits).abs().max()
        assert float(diff) <= 2e-5, (strategy, float(diff))


def test_unsharded_tensors_are_refused(sharded_runs: Path, tmp_path: Path) -> None:
    """An adapter with a flattened and an empty LoRA tensor (what an ungathered ZeRO-3 save
    looks like) is refused with the reason, and nothing is written."""
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(sharded_runs / "run_zero3" / "adapter", broken)
    tensors = load_file(str(broken / "adapter_model.safetensors"))
    keys = sorted(k for k in tensors if "lora_A" in k)
    tensors[keys[0]] = tensors[keys[0]].flatten()
    tensors[keys[1]] = tensors[keys[1]][:0]
    save_file(tensors, str(broken / "adapter_model.safetensors"))
    code, _, err = cli("export", str(broken), "--adapter-only", str(tmp_path / "out"))
    assert code == 2, err
    assert "not whole LoRA weights" in err and "1-D" in err and "empty" in err
    assert not (tmp_path / "out").exists()
