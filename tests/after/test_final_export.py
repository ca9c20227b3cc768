"""A run with `output.export: merged`: the trainer's own merged `model/`, used by the commands."""

from __future__ import annotations

import json
from pathlib import Path

from tests.after.helpers import cli, train_here


def test_merged_final_export(shapes: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    from trainer.infer import Predictor, single_prompt
    from trainer.trained import load_trained, resolve

    run = train_here(tmp_path, shapes, "merged", output={"export": "merged"}, train={"lr": 1e-2})
    model_dir = run / "model"
    for name in ("model.safetensors", "config.json", "vlaunch_spec.yaml", "README.md"):
        assert (model_dir / name).is_file(), name
    assert str(model_dir) in (model_dir / "README.md").read_text()  # not the staging folder
    assert not (run / "adapter").exists()

    # The final model/ equals base + the last checkpoint's adapter.
    image = sorted((shapes / "images").glob("eval_*.png"))[0]
    from_ckpt = Predictor(load_trained(resolve(run, "latest")))
    inputs = from_ckpt.inputs(single_prompt("What colour?", images=[image]))
    plain = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    with torch.no_grad():
        diff = (plain(**inputs).logits - from_ckpt.model(**inputs).logits).abs().max()
    assert float(diff) <= 2e-5

    code, _, err = cli("export", str(run), "--adapter-only", str(tmp_path / "a"))
    assert code == 2 and "--checkpoint latest" in err
    code, out, err = cli(
        "export", str(run), "--adapter-only", str(tmp_path / "a"), "--checkpoint", "latest"
    )
    assert code == 0, err
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_dir()  # tiny:llava's real folder
    code, out, err = cli("infer", str(run), "--image", str(image), "--prompt", "What colour?")
    assert code == 0 and out.strip() == from_ckpt.generate([single_prompt(
        "What colour?", images=[image])])[0]  # fmt: skip
