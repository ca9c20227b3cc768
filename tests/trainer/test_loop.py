"""The loop in this process (no Ray, world 1): run directory, checkpoint layout, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.trainer.helpers import write_job
from vlaunch_core.spec_load import load_spec


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, shapes_data: Path):  # type: ignore[no-untyped-def]
    """A 3-step LoRA run with held-out evaluation, trained here; returns the recipe."""
    from trainer.loop import Recipe

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on a busy 2-core box
    folder = tmp_path_factory.mktemp("loop")
    job = write_job(
        folder,
        shapes_data,
        name="inproc",
        data={"eval_mixture": "shapes_eval"},
        train={"max_steps": 3, "checkpoint_every": 2},
    )
    spec = load_spec(job)
    recipe = Recipe(spec, quiet=True)
    recipe.setup()
    result = recipe.train()
    model = recipe.strategy.base_model
    recipe.modes_after_train = [  # type: ignore[attr-defined]
        m.training for name, m in model.named_modules() if name.endswith("lora_dropout.default")
    ] + [model.training]
    recipe.cleanup()
    torch.set_num_threads(threads)
    assert result.state == "finished" and result.step == 3
    return recipe


def test_run_directory_layout(finished) -> None:  # type: ignore[no-untyped-def]
    run = finished.run_dir.path
    for name in (
        "spec.yaml",
        "plan.json",
        "status.json",
        "metrics.jsonl",
        "loss.png",
        "eval.json",
        "tuning.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/README.md",
    ):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    train = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in train if r["kind"] == "train"]
    assert steps == [1, 2, 3]
    first = next(r for r in train if r["kind"] == "train")
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "target_tokens"):
        assert first[key] > 0, key
    ev = json.loads((run / "eval.json").read_text())
    assert {"accuracy_before", "accuracy_after", "chance"} <= ev.keys()
    assert ev["step_before"] == 0 and ev["step_after"] == 3
    assert 0 < ev["chance"] < 1 and ev["num_samples"] == 32


def test_checkpoint_holds_only_trainable_weights(finished) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file

    run = finished.run_dir
    assert [p.name for p in run.checkpoints()] == ["checkpoint_000002", "checkpoint_000003"]
    ckpt = run.latest_checkpoint()
    for name in (
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng/rank_00000.pt",
        "trainer_state.json",
        "plan.json",
        "spec.yaml",
    ):
        assert (ckpt / name).is_file(), name
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["samples_consumed"] == 24
    saved = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
    saved_params = sum(t.numel() for t in saved.values())
    assert saved_params == finished.tuning_report.trainable_params
    assert saved_params < finished.tuning_report.total_params / 2
    # Every optimizer tensor loads with weights_only=True.
    torch.load(ckpt / "optimizer.pt", weights_only=True)


def test_exported_adapter_reproduces_the_trained_logits(finished) -> None:  # type: ignore[no-untyped-def]
    from peft import PeftModel

    from trainer.models.loading import load_model

    model = finished.strategy.base_model
    data = finished.train_data
    batch = data.collator([data.dataset[0], data.dataset[1]]).inputs
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        trained = model(**inputs, use_cache=False).logits

    base = load_model(finished.spec.model).model
    with torch.no_grad():
        untouched = base(**inputs, use_cache=False).logits
    loaded = PeftModel.from_pretrained(base, str(finished.run_dir.adapter_dir)).eval()
    with torch.no_grad():
        reloaded = loaded(**inputs, use_cache=False).logits
    assert (trained - untouched).abs().max() > 1e-3  # training changed the model
    torch.testing.assert_close(reloaded, trained, rtol=0, atol=1e-5)


def test_final_adapter_loads_with_transformers(finished) -> None:  # type: ignore[no-untyped-def]
    """transformers loads the run's adapter/ itself (the base it names, then the adapter with
    PEFT), and the processor saved next to it is the one the run encoded with."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = finished.run_dir.adapter_dir
    data = finished.train_data
    batch = data.collator([data.dataset[0], data.dataset[1]]).inputs
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model = finished.strategy.base_model.eval()
    plain = AutoModelForImageTextToText.from_pretrained(folder).eval()
    with torch.no_grad():
        trained = model(**inputs, use_cache=False).logits
        loaded = plain(**inputs, use_cache=False).logits
    torch.testing.assert_close(loaded, trained, rtol=0, atol=1e-5)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor) is type(finished.processor)
    assert processor.chat_template == finished.processor.chat_template
    assert processor.tokenizer.get_vocab() == finished.processor.tokenizer.get_vocab()


def test_model_trains_in_training_mode(finished) -> None:  # type: ignore[no-untyped-def]
    """from_pretrained returns eval mode; the loop must switch to train mode (LoRA dropout is
    live while training) and the held-out evaluation must hand training mode back."""
    modes = finished.modes_after_train
    assert len(modes) > 1 and all(modes)


def test_one_exchange_per_optimizer_step(finished) -> None:  # type: ignore[no-untyped-def]
    """3 steps with checkpoints at 2 and 3: one exchange (the step's one host sync) at the
    start of each step, and one more to report a step before each checkpoint. Host memory
    (train.host_memory_every: 10) rides on it at the first and the last step only."""
    assert finished.sync.exchanges == 3 + 2
    run = finished.run_dir.path
    train = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    with_memory = [r["step"] for r in train if r["kind"] == "train" and "host_rss_gib" in r]
    assert with_memory == [1, 3]


def test_step_sync_carries_the_previous_step() -> None:
    """World 1: the exchange returns the step's targets, the stop vote and the previous
    step's totals, read from device tensors in the exchange itself."""
    from trainer.api import StepOutput
    from trainer.dist import DistEnv
    from trainer.step_sync import StepSync

    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    sync = StepSync(env)
    first = sync.exchange(targets=7)
    assert (first.tokens, first.stop, first.data_error) == (7.0, False, False)
    assert (first.previous, first.memory) == (None, None)
    out = StepOutput(torch.tensor(3.5, dtype=torch.float64), 11, torch.tensor(0.25))
    got = sync.exchange(targets=5, stop=True, data_error=True, previous=out)
    assert got.tokens == 5.0 and got.stop and got.data_error
    assert got.previous is not None
    assert (got.previous.loss_sum, got.previous.input_tokens, got.previous.grad_norm) == (
        3.5,
        11.0,
        0.25,
    )
    assert sync.exchanges == 2
