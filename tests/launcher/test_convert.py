"""`vlaunch convert`: HF TrainingArguments JSON (seed 002) and VILA parameters (seed 001)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from launcher.cli import main
from launcher.convert import convert, read_settings

FIXTURES = Path(__file__).parent / "fixtures"


def test_hf_training_arguments() -> None:
    conv = convert(read_settings(FIXTURES / "hf_training_args.json"), gpus_per_node=2)
    spec = conv.spec
    assert spec["model"] == {
        "name_or_path": "ibm-granite/granite-vision-3.2-2b",
        "attn_implementation": "flash_attention_2",
    }
    # per-device 8 x accumulation 2 x 2 GPUs
    assert spec["train"]["global_batch_size"] == 32
    assert spec["train"]["micro_batch_size"] == 8
    assert spec["train"]["grad_accum_steps"] == 2
    assert spec["train"]["precision"] == "bf16"
    assert spec["train"]["lr"] == pytest.approx(1e-4)
    assert spec["train"]["gradient_checkpointing"] is True
    assert spec["data"]["datasets"]["train"]["text_field"] == "messages"
    assert spec["data"]["datasets"]["train"]["image_field"] == "images"
    assert (spec["name"], spec["output"]["dir"]) == ("test", "/app")
    assert "remove_unused_columns" in conv.ignored
    assert "fsdp_transformer_layer_cls_to_wrap" in conv.ignored
    # a hub dataset: read from the local Hugging Face cache (tests/trainer/test_data_sources.py
    # trains on a local copy)
    assert spec["data"]["datasets"]["train"]["source"] == "hf"
    assert spec["data"]["datasets"]["train"]["data_path"] == "HuggingFaceH4/llava-instruct-mix-vsft"
    assert spec["data"]["mixture"] == "train"
    assert "training_data_path" not in conv.unmapped
    assert any("Hugging Face dataset" in n for n in conv.notes)


def test_vila_parameters_from_shell_script() -> None:
    conv = convert(read_settings(FIXTURES / "vila_params.sh"))
    spec = conv.spec
    assert spec["name"] == "WTS_4096_r16_a32"
    assert spec["train"]["global_batch_size"] == 2
    assert spec["train"]["grad_accum_steps"] == 1
    assert spec["train"]["strategy"] == "zero3"
    assert spec["resources"]["gpus_per_node"] == 2  # from torchrun --nproc_per_node
    assert spec["data"] == {
        "mixture": "WTS_train",
        "max_length": 4096,
        "num_workers": 0,
        "image": {"aspect_ratio": "resize"},
    }
    # the team's setup: LoRA on the LLM, vision tower and projector frozen -> no preset fits
    assert spec["tuning"]["preset"] is None
    assert (
        spec["tuning"]["vision_tower"],
        spec["tuning"]["projector"],
        spec["tuning"]["language_model"],
    ) == ("frozen", "frozen", "lora")
    assert spec["tuning"]["lora"] == {"r": 16, "alpha": 32.0}
    assert conv.unmapped == {"s2_scales": "336,672,1008"}
    assert any("dynamic" in n for n in conv.notes)


@pytest.mark.parametrize(
    ("settings", "preset"),
    [
        ({"lora_enable": True, "lora_llm": True, "lora_vt": True}, "lora_vt_llm"),
        ({"lora_enable": True, "lora_llm": True, "bits": 4}, "qlora_llm"),
        ({"lora_enable": True, "lora_llm": True, "tune_vision_tower": True}, "fft_vt_lora_llm"),
        ({"tune_vision_tower": True, "tune_language_model": True}, "fft"),
        ({"tune_vision_tower": True, "tune_language_model": False}, "fft_vt"),
        ({"lora_enable": True, "lora_llm": True}, "lora_llm"),
    ],
)
def test_vila_flags_select_presets(settings: dict[str, object], preset: str) -> None:
    assert convert(settings).spec["tuning"]["preset"] == preset


def test_global_batch_wins_over_per_device() -> None:
    conv = convert(
        {
            "GLOBAL_TRAIN_BATCH_SIZE": 64,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 2,
        }
    )
    assert conv.spec["train"]["global_batch_size"] == 64
    assert "micro_batch_size" not in conv.spec["train"]
    assert any("derives it" in n for n in conv.notes)


def test_lora_keys_without_lora_are_reported() -> None:
    conv = convert({"lora_r": 16, "tune_language_model": True})
    assert "lora" not in conv.spec["tuning"]
    assert conv.ignored["lora_r"].startswith("LoRA is not enabled")


def test_cli_writes_a_valid_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "train.json"
    sample = '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}'
    data.write_text(f"[{sample}, {sample}]")  # one global batch of 2
    src = tmp_path / "args.json"
    src.write_text(
        '{"model_name_or_path": "tiny:llava", "training_data_path": "train.json", '
        '"per_device_train_batch_size": 2, "learning_rate": 2e-5, "foo": 1}'
    )
    out = tmp_path / "job.yaml"
    assert main(["convert", str(src), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "NOT MAPPED foo=1" in err
    spec = yaml.safe_load(out.read_text())
    assert spec["train"]["global_batch_size"] == 2
    assert main(["validate", str(out)]) == 0
    # never overwrites without --force
    assert main(["convert", str(src), "-o", str(out)]) == 2


def test_cli_reports_specs_that_still_need_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the dataset fields without training_data_path: the spec names no data yet
    settings = json.loads((FIXTURES / "hf_training_args.json").read_text())
    del settings["training_data_path"]
    args = tmp_path / "args.json"
    args.write_text(json.dumps(settings))
    assert main(["convert", str(args)]) == 1
    err = capsys.readouterr().err
    assert "needs attention" in err and "data.datasets.train.data_path" in err
    # with the hub dataset it names, the spec is complete (read from the local HF cache)
    assert main(["convert", str(FIXTURES / "hf_training_args.json")]) == 0
