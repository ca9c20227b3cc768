"""Continue training from a finished run on new data (`model.adapter`, VILA#252).

The new run starts from the demo-like run's adapter (LoRA + the projector as
modules_to_save) and trains on the shapes "kinds" questions (messages format). At step 0 its
model must be exactly base + the old adapter: logits equal (measured max abs difference 0),
and its step-0 held-out loss equals the old run's final one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.helpers import write_job
from vlaunch_core.errors import UserError


def _job(folder: Path, shapes: Path, demo_run: Path, name: str, **sections: Any) -> Path:
    base: dict[str, Any] = {
        "model": {"name_or_path": "tiny:llava", "adapter": str(demo_run)},
        "data": {
            "datasets": {
                "kinds": {
                    "data_path": str(shapes / "kinds_train.jsonl"),
                    "media_dir": str(shapes),
                    "format": "messages",
                }
            },
            "mixture": "kinds",
            "eval_mixture": "shapes_eval",
        },
        "train": {
            "max_steps": 3,
            "checkpoint_every": 3,
            "global_batch_size": 8,
            "micro_batch_size": 8,
        },
        "resources": {"profile": "cpu", "gpus_per_node": 1},
        "tuning": {"preset": "lora_llm"},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return write_job(folder, shapes, name=name, **base)


def test_step_zero_is_base_plus_the_old_adapter(
    demo_run: Path, shapes: Path, tmp_path: Path
) -> None:
    import torch

    from trainer.loop import Recipe
    from trainer.loss import model_inputs
    from trainer.trained import load_trained, resolve
    from vlaunch_core.spec_load import load_spec

    spec = load_spec(_job(tmp_path, shapes, demo_run, "cont"))
    recipe = Recipe(spec, quiet=True)
    try:
        recipe.setup()
        model = recipe.strategy.base_model.eval()
        data = recipe.train_data
        batch = data.collator([data.dataset[i] for i in range(4)]).inputs
        inputs = model_inputs(batch, torch.device("cpu"))
        reference: Any = load_trained(resolve(demo_run)).model  # PeftModel: base + adapter
        with torch.no_grad():
            ours = model(**inputs, use_cache=False).logits
            theirs = reference(**inputs, use_cache=False).logits
            with reference.disable_adapter():  # LoRA and modules_to_save off: the base
                untouched = reference(**inputs, use_cache=False).logits
    finally:
        recipe.cleanup()
    diff = float((ours - theirs).abs().max())
    print(f"\nstep 0 vs base + old adapter: max |dlogits| {diff:.2g}")
    assert diff == 0.0
    assert float((ours - untouched).abs().max()) > 1e-2  # the adapter is really in there


def test_the_continued_run_trains_and_starts_where_the_old_one_ended(
    demo_run: Path, shapes: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from trainer.loop import train
    from vlaunch_core.spec_load import load_spec

    result = train(load_spec(_job(tmp_path, shapes, demo_run, "cont2")), quiet=True)
    assert result.state == "finished"
    old = json.loads((demo_run / "eval.json").read_text())
    new = json.loads((result.run_dir / "eval.json").read_text())
    # Same weights, same data; only the evaluation batches differ (1 rank here, 2 there).
    assert new["loss_before"] == pytest.approx(old["loss_after"], rel=1e-6)
    assert abs(new["accuracy_before"] - old["accuracy_after"]) <= 1 / 40
    before = load_file(str(demo_run / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(result.run_dir / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert max(float((before[k] - after[k]).abs().max()) for k in before) > 1e-4  # it trained
    spec_text = (result.run_dir / "spec.yaml").read_text()
    assert f"adapter: {demo_run}" in spec_text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tuning": {"preset": "lora_llm", "lora": {"r": 8, "alpha": 32}}}, "differ in shape"),
        ({"tuning": {"preset": "lora_llm", "lora": {"alpha": 8}}}, "LoRA settings differ"),
        ({"tuning": {"preset": "lora_llm", "projector": "frozen"}}, "not trained by this run"),
    ],
)
def test_mismatched_tuning_is_refused(
    demo_run: Path, shapes: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    from trainer.loop import train
    from vlaunch_core.spec_load import load_spec

    spec = load_spec(_job(tmp_path, shapes, demo_run, "bad", **change))
    with pytest.raises(UserError, match=message):
        train(spec, quiet=True)


def test_spec_rules_for_the_adapter(demo_run: Path, shapes: Path, tmp_path: Path) -> None:
    from vlaunch_core.errors import ProblemReport
    from vlaunch_core.spec_load import load_spec

    job = _job(tmp_path, shapes, demo_run, "fft", tuning={"preset": "fft"})
    with pytest.raises(ProblemReport, match=r"model\.adapter"):
        load_spec(job)
    job = _job(tmp_path, shapes, demo_run, "rel", model={"adapter": "runs/x"})
    assert load_spec(job).model.adapter == str(tmp_path / "runs" / "x")  # relative to the spec
