"""Exports of FSDP and ZeRO-3 runs (two CPU ranks, gloo, torchrun): whole LoRA tensors.

Sharded strategies hold each rank's slice of a parameter (FSDP: DTensor shards; ZeRO-3:
flattened partitions, 0-element placeholders outside a gather). An adapter written from those
without gathering has empty or 1-D LoRA tensors (vllm#28640). Here every tensor of the
exported adapters must be whole: 2-D LoRA matrices of (r, in) / (out, r) as in the base
model, modules_to_save as the base module's weights; the two runs (same job, dropout 0) agree
to 5e-5, and the merged exports reproduce base + adapter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.after.helpers import cli
from tests.trainer.helpers import REPO, explain, torchrun, write_job

STRATEGIES = ("fsdp", "zero3")


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
    import torch
    from safetensors.torch import load_file

    from trainer.infer import Predictor, single_prompt
    from trainer.trained import load_trained, resolve

    a, b = (load_file(str(sharded_runs / f"run_{s}" / "adapter" / "adapter_model.safetensors"))
            for s in STRATEGIES)  # fmt: skip
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 5e-5, worst
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
