"""The GPU benchmark's code on CPU with tiny models (`--device cpu --tiny`)."""

from __future__ import annotations

import pytest

from bench import flops, gpu, gpu_batches, gpu_setup


def test_tiny_run_with_baseline() -> None:
    names = ["qwen2-vl-2b lora", "llava-1.5-7b lora"]  # both have a transformers baseline
    result = gpu.run(device="cpu", tiny=True, names=names, steps=2, warmup=1, isolate=False)
    assert result["device"] == "cpu" and result["tiny"]
    rows = result["rows"]
    assert [(r["config"], r["trainer"]) for r in rows] == [
        (names[0], "vlaunch loop"),
        (names[0], "transformers.Trainer + peft"),
        (names[1], "vlaunch loop"),
        (names[1], "transformers.Trainer + peft"),
    ]
    for row in rows:
        assert row["model"].startswith("tiny:")
        assert row["step_time_s"] > 0 and row["tokens_per_s"] > 0 and row["flops_per_step"] > 0
        assert row["mfu"] is None and row["measured"]["allocated"] is None  # CPU: no CUDA peaks
        parts = row["predicted"]["parts"]
        assert row["predicted"]["total"] == sum(parts.values()) and parts["activations"] > 0
        assert row["trainable_params"] > 0
    # the same model is trained by both: same trainable parameters
    assert rows[0]["trainable_params"] == rows[1]["trainable_params"]


def test_each_configuration_trains_with_its_loss() -> None:
    """The loop's step with the configuration's `train.loss`, as `trainer.loop` builds it
    (`auto` is the chunked loss without CUDA); the baseline keeps the model's own loss."""
    names = ["qwen2-vl-2b lora loss=plain", "qwen2-vl-2b lora loss=chunked", "qwen2-vl-2b lora"]
    result = gpu.run(device="cpu", tiny=True, names=names, steps=1, warmup=1, isolate=False)
    losses = {(r["config"], r["trainer"]): r["loss"] for r in result["rows"]}
    assert losses == {
        (names[0], "vlaunch loop"): "plain",
        (names[1], "vlaunch loop"): "chunked",
        (names[2], "vlaunch loop"): "chunked",
        (names[2], "transformers.Trainer + peft"): "plain",
    }
    for row in result["rows"]:
        if row["trainer"] == "vlaunch loop":  # the mean token loss of the last step
            assert 0 < row["last_loss"] < 20, row


def test_isolated_child_process() -> None:
    result = gpu.run(
        device="cpu", tiny=True, names=["qwen2-vl-2b full"], steps=1, warmup=1, isolate=True
    )
    (row,) = result["rows"]
    assert "error" not in row, row
    assert row["tuning"]["language_model"] == "full"


@pytest.mark.gpu
def test_on_cuda_with_baseline() -> None:
    """On a GPU: peaks, MFU and the prediction error are measured (tiny models, each run in its
    own process as `python -m bench.gpu` does)."""
    names = ["qwen2-vl-2b lora", "llava-1.5-7b lora zero3"]
    result = gpu.run(device="cuda", tiny=True, names=names, steps=2, warmup=1)
    assert result["device"] != "cpu"
    assert [r["trainer"] for r in result["rows"]] == [
        "vlaunch loop",
        "transformers.Trainer + peft",
        "vlaunch loop",
    ]
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["precision"] == "bf16" and 0 < row["mfu"] < 1
        measured = row["measured"]
        assert 0 < measured["allocated"] <= measured["reserved"] and measured["context"] > 0
        assert row["memory_error"] is not None


def test_configurations_are_at_least_six_and_plan() -> None:
    assert len(gpu_setup.CONFIGS) >= 6
    assert {c.strategy for c in gpu_setup.CONFIGS} >= {"ddp", "zero2", "zero3"}
    from vlaunch_core.plan import make_plan

    for cfg in gpu_setup.CONFIGS:
        spec = gpu_setup.gpu_spec(cfg, profile="h100-80gb", precision="bf16", out_dir="/tmp")
        plan = make_plan(spec)
        assert plan.memory is not None and plan.batch.micro_batch_size == cfg.micro_batch_size


def test_memory_error_is_relative_to_reserved_plus_context() -> None:
    predicted = {"total": 11 * 2**30, "parts": {}}
    measured = {"allocated": 8 * 2**30, "reserved": 9 * 2**30, "context": 2**30}
    assert gpu_setup.memory_error(predicted, measured) == pytest.approx(0.1)
    assert gpu_setup.memory_error(predicted, {"allocated": None, "reserved": None}) is None


@pytest.mark.parametrize("model", ["random:qwen2-vl-2b", "random:llava-1.5-7b", "tiny:qwen2_vl"])
def test_synthetic_batches_are_full_length(model: str) -> None:
    config = gpu_setup.model_config_of(model)
    px = 448 if model.startswith("random:") else 32
    batch, shape = gpu_batches.synthetic_batch(config, 2, 1024 if px == 448 else 64, image_px=px)
    assert batch["input_ids"].shape == (2, shape.seq_len)
    image_id = int(config.get("image_token_index") or config["image_token_id"])
    assert int(batch["input_ids"].eq(image_id).sum()) == 2 * shape.image_tokens
    assert int((batch["labels"] != -100).sum()) == 2 * (shape.seq_len - shape.image_tokens) - (
        0 if "image_token_index" in config else 4  # Qwen2-VL: vision start/end are masked too
    )


@pytest.mark.parametrize(
    ("model", "tuning"),
    [
        ("tiny:llava", {"preset": "lora_llm"}),
        ("tiny:llava", gpu_setup.LLM_FULL),
        ("tiny:qwen2_vl", {"preset": "fft"}),
        ("tiny:qwen2_vl", {"preset": "lora_vt_llm"}),
    ],
)
def test_flop_count_matches_torch_counter(model: str, tuning: dict[str, object]) -> None:
    """The analytic count (matmuls, LoRA adapters and attention) against torch's FlopCounterMode
    on a real forward + backward. Eager attention: its QK^T and AV are plain matmuls the
    counter sees (it does not see SDPA on CPU); gradient checkpointing off, or the counter
    would also see the recomputed forward, which the analytic count leaves out on purpose."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.loss import summed_cross_entropy
    from vlaunch_core.plan import make_plan

    cfg = gpu_setup.GpuConfig("t", model, model, tuning=dict(tuning), gradient_checkpointing=False)
    cfg = gpu_setup.tiny_variant(cfg)
    spec = gpu_setup.gpu_spec(cfg, profile="cpu", precision="fp32", out_dir="/tmp")
    spec.model.attn_implementation = "eager"
    model_obj, _, _, _ = gpu_setup.build_model(spec, torch.device("cpu"), "fp32")
    config = gpu_setup.model_config_of(model)
    batch, shape = gpu_batches.synthetic_batch(
        config, cfg.micro_batch_size, cfg.seq_len, image_px=gpu_setup.TINY_IMAGE_PX
    )
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model_obj(**inputs, use_cache=False).logits
        summed_cross_entropy(logits, batch["labels"]).backward()
    counted = counter.get_total_flops()
    adapters = make_plan(spec).memory.trainable_params  # type: ignore[union-attr]
    from vlaunch_core.models.catalog import describe

    description = describe(spec.model)
    assert description is not None
    analytic = flops.micro_batch_flops(description, spec.tuning.modes(), shape, adapters)
    assert analytic["total"] == analytic["matmul"] + analytic["attention"]
    # attention is a real share here: the matmuls alone would miss the count by > 5%
    assert analytic["matmul"] < 0.95 * counted
    # what remains: the first layers need no input gradient (patch embedding), the count
    # assumes they do
    assert analytic["total"] == pytest.approx(counted, rel=0.03)
