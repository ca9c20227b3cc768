"""`vlaunch export --llm-only-adapter`: the language model's LoRA only (vLLM, vllm#16364).

A run that trained LoRA on the language model alone (projector frozen) exports it whole and
PEFT reproduces the run's model from it. A run that also trained the vision tower (LoRA) or
the projector is refused with the reason, unless --drop-non-llm, which writes the LM part.
Every export carries the base model's processor: an adapter whose base cannot be reached is
refused before anything is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.after.helpers import cli, train_here


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shapes: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("llm_only")
    return {
        "lm": train_here(folder, shapes, "lm", tuning={"preset": "lora_llm",
                                                      "projector": "frozen"}),
        "vt": train_here(folder, shapes, "vt", model={"name_or_path": "tiny:idefics3"},
                         tuning={"preset": "lora_vt_llm"}),
    }  # fmt: skip


def test_lm_only_run_exports_whole(runs: dict[str, Path], shapes: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel

    from trainer.infer import Predictor, single_prompt
    from trainer.models.loading import load_model
    from trainer.trained import load_trained, resolve

    out = tmp_path / "llm"
    code, stdout, err = cli("export", str(runs["lm"]), "--llm-only-adapter", str(out))
    assert code == 0, err
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["modules_to_save"] is None and isinstance(config["lora_alpha"], int)
    assert "dropped" not in stdout
    reference = Predictor(load_trained(resolve(runs["lm"])))
    image = sorted((shapes / "images").glob("eval_*.png"))[0]
    inputs = reference.inputs(single_prompt("What colour?", images=[image]))
    base = load_model(resolve(runs["lm"]).base_model_spec()).model
    plain = PeftModel.from_pretrained(base, str(out)).eval()  # PEFT alone
    with torch.no_grad():
        diff = (plain(**inputs).logits - reference.model(**inputs).logits).abs().max()
    assert float(diff) == 0.0


def test_vision_lora_is_refused_then_dropped(runs: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from vlaunch_core.models.catalog import describe
    from vlaunch_core.spec import ModelSpec

    out = tmp_path / "llm"
    code, _, err = cli("export", str(runs["vt"]), "--llm-only-adapter", str(out))
    assert code == 2
    assert "LoRA on the vision tower" in err and "model.connector" in err
    assert "--merge" in err and "--drop-non-llm" in err
    assert not out.exists()

    code, stdout, err = cli("export", str(runs["vt"]), "--llm-only-adapter", str(out),
                            "--drop-non-llm")  # fmt: skip
    assert code == 0, err
    assert "dropped" in stdout and "model.connector" in stdout
    tensors = load_file(str(out / "adapter_model.safetensors"))
    family = describe(ModelSpec(name_or_path="tiny:idefics3"))
    assert family is not None
    assert tensors and all(
        family.module_of(k.removeprefix("base_model.model.")) == "language_model" for k in tensors
    )
    regex = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert re.fullmatch(regex, "model.text_model.layers.0.self_attn.q_proj")
    assert not re.fullmatch(regex, "model.vision_model.encoder.layers.0.self_attn.q_proj")
    assert "--drop-non-llm" in (out / "README.md").read_text()


def test_projector_trained_in_full_is_refused(demo_run: Path, tmp_path: Path) -> None:
    code, _, err = cli("export", str(demo_run), "--llm-only-adapter", str(tmp_path / "o"))
    assert code == 2 and "model.multi_modal_projector" in err
    code, _, err = cli("export", str(demo_run), "--merge", str(tmp_path / "o"), "--drop-non-llm")
    assert code == 2 and "only applies to --llm-only-adapter" in err


def test_adapter_whose_base_is_out_of_reach_is_refused(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    foreign = tmp_path / "foreign"  # an adapter folder without vlaunch's spec
    shutil.copytree(runs["lm"] / "adapter", foreign)
    (foreign / "vlaunch_spec.yaml").unlink()
    config = json.loads((foreign / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (foreign / "adapter_config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    code, _, err = cli("export", str(foreign), "--adapter-only", str(out))
    assert code == 2 and "cannot load the processor of the base model" in err, err
    assert str(tmp_path / "gone") in err and not out.exists()
    code, _, err = cli("export", str(foreign), "--llm-only-adapter", str(out))
    assert code == 2 and str(tmp_path / "gone") in err and not out.exists()
