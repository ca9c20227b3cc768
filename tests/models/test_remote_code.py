"""A remote-code VLM (`model.trust_remote_code: true`), shaped like NVILA's `-hf` checkpoints:
the same discovery on its own classes, training, a merged export that reloads with
transformers alone (its code travels with it), and refusals with a clear fix."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli import main
from tests.models.remote_code import write_nvila_like
from tests.trainer.helpers import child_env, write_job
from vlaunch_core.spec_load import load_spec

RELOAD = """
import json, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
inputs = load_file(sys.argv[2])
with torch.no_grad():
    logits = model(**inputs).logits
assert not any(m.split(".")[0] in ("launcher", "trainer", "vlaunch_core") for m in sys.modules)
print(json.dumps({"class": type(model).__name__, "logits": logits.flatten()[:64].tolist(),
                  "max": float(logits.abs().max())}))
"""


@pytest.fixture(scope="module")
def nvila(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nvila_like(tmp_path_factory.mktemp("remote") / "nvila-tiny")


@pytest.fixture(scope="module")
def trained(nvila: Path, shapes_data: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from trainer.loop import Recipe

    folder = tmp_path_factory.mktemp("remote-run")
    job = write_job(
        folder,
        shapes_data,
        name="nvila",
        model={"name_or_path": str(nvila), "trust_remote_code": True},
        tuning={"preset": "lora_llm", "lora": {"dropout": 0.0}},
        train={"max_steps": 4, "checkpoint_every": 4, "lr": 1e-2},
        resources={"profile": "cpu", "gpus_per_node": 1},
    )
    recipe = Recipe(load_spec(job), quiet=True)
    recipe.setup()
    result = recipe.train()
    recipe.cleanup()
    assert result.state == "finished"
    return job, recipe


def test_parts_and_lora_targets_are_read_off_the_remote_classes(trained) -> None:  # type: ignore[no-untyped-def]
    _, recipe = trained
    d = recipe.family
    assert d.architecture == "NVILAForCausalLM" and d.remote_code
    assert (d.vision_tower, d.projector, d.language_model) == (
        ("vision_tower",),
        ("mm_projector",),
        ("llm",),
    )
    report = recipe.tuning_report
    adapted = set(report.lora["targets"]["language_model"]["matched"])  # type: ignore[index]
    linears = {
        p.name.removesuffix(".weight")
        for p in d.params
        if p.module == "language_model" and p.kind == "linear" and p.name.endswith(".weight")
    }
    assert adapted == linears - {"llm.lm_head"}  # VILA: every Linear but lm_head
    assert report.trainable["projector"] == report.total["projector"]  # projector in full
    assert report.trainable["vision_tower"] == 0


def test_training_lowers_the_loss(trained) -> None:  # type: ignore[no-untyped-def]
    _, recipe = trained
    records = [
        json.loads(line)
        for line in recipe.run_dir.metrics_file.read_text().splitlines()
        if '"train"' in line
    ]
    assert records[-1]["loss"] < records[0]["loss"]


def test_merged_export_reloads_without_vlaunch(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from trainer.trained import load_trained, resolve

    _, recipe = trained
    out = tmp_path / "merged"
    assert main(["export", str(recipe.run_dir.path), "--merge", str(out)]) == 0
    assert (out / "modeling_nvila.py").is_file() and (out / "configuration_nvila.py").is_file()
    loaded = load_trained(resolve(recipe.run_dir.path))
    processor = loaded.processor
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}],
        add_generation_prompt=True,
    )
    inputs = dict(processor(text=[text], images=[Image.new("RGB", (40, 40))], return_tensors="pt"))
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(tmp_path / "inputs.safetensors"))
    with torch.no_grad():
        ref = loaded.model.eval()(**inputs).logits.flatten()[:64]
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, str(out), str(tmp_path / "inputs.safetensors")],
        capture_output=True,
        text=True,
        env={**child_env(), "PYTHONPATH": ""},
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fresh["class"] == "NVILAForCausalLM"
    # merged W + s*B@A in fp32 vs the adapter applied on the fly: a few ulps of logits ~ 1-5
    assert (torch.tensor(fresh["logits"]) - ref).abs().max() < 2e-5


def test_remote_code_needs_consent(
    nvila: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(f"name: r\nmodel:\n  name_or_path: {nvila}\ndata:\n  mixture: x\n")
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"trust_remote_code", err)
