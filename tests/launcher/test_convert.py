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
    # fms-hf-tuning's FSDP (accelerate launch) is FSDP here too, and says what it wraps
    assert spec["train"]["strategy"] == "fsdp"
    wrap = "accelerate_launch_args.fsdp_transformer_layer_cls_to_wrap"
    assert conv.mapped[wrap] == "train.strategy=fsdp"
    (changed,) = [c for c in conv.changed if c.startswith(wrap)]
    assert "GraniteDecoderLayer" in changed
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
    assert any("dynamic" in c for c in conv.changed)
    # $GRADIENT_ACCUMULATION_STEPS and $RUN_NAME come from their DEFAULT_ twins, as VILA's
    # scripts/setups/train.sh sets them
    assert spec["output"]["dir"] == "runs"
    assert "$" not in yaml.safe_dump(spec)


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
    assert any("derives the micro batch" in c for c in conv.changed)


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


# ------------------------------------------------ shell variables, changes of intent, bad input


def run_convert(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["convert", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_vila_script_with_unset_variables_is_refused_naming_each(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_convert(capsys, str(FIXTURES / "vila_sft.sh"))
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert len(lines) <= 24  # one screen
    assert "vlaunch never copies `$...` into a spec" in lines[0]
    assert any(ln.split() == ["$NNODES", "nnodes", "(resources.nodes)"] for ln in lines)
    assert any(ln.split()[:2] == ["$GPUS_PER_NODE", "nproc_per_node"] for ln in lines)
    assert any(ln.split()[:2] == ["$STAGE2_PATH", "model_name_or_path"] for ln in lines)
    assert "--set NNODES=..." in err and "--nodes / --gpus-per-node" in err
    # supplied by VILA's DEFAULT_ convention or not needed: not asked for
    for name in ("$GRADIENT_ACCUMULATION_STEPS", "$RUN_NAME", "$PER_DEVICE", "$MASTER_ADDR"):
        assert name not in err


def test_vila_script_with_set_values_converts_correctly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_convert(
        capsys,
        str(FIXTURES / "vila_sft.sh"),
        "--set",
        "NNODES=2",
        "--set",
        "GPUS_PER_NODE=8",
        "--set",
        "STAGE2_PATH=Efficient-Large-Model/NVILA-Lite-8B",
    )
    assert code == 1  # converted; its datasets still need a registry
    spec = yaml.safe_load(out)
    assert "$" not in out
    assert spec["name"] == "NVILA-Lite-8B-sft"
    assert spec["model"]["name_or_path"] == "Efficient-Large-Model/NVILA-Lite-8B"
    assert spec["data"]["mixture"] == "sharegpt4v_sft+llava_instruct"  # ${2:-default}
    assert spec["train"]["global_batch_size"] == 128
    assert spec["train"]["grad_accum_steps"] == 2
    assert spec["train"]["strategy"] == "zero3"
    assert spec["tuning"] == {"preset": "fft"}
    assert spec["resources"] == {"nodes": 2, "gpus_per_node": 8}
    assert spec["output"]["dir"] == "runs/train/nvila-8b-sft"
    assert "$NNODES = 2" in err and "$RUN_NAME = NVILA-Lite-8B-sft" in err
    assert "CHANGED output_dir=runs/train/nvila-8b-sft/model: the run directory is" in err
    assert "source scripts/setups/train.sh` is not read" in err
    assert "unknown dataset 'sharegpt4v_sft'" in err


def test_lora_llm_without_lora_enable_says_what_it_trains() -> None:
    conv = convert({"lora_llm": True})
    assert conv.spec["tuning"]["language_model"] == "full"  # as VILA: no LoRA without lora_enable
    assert conv.changed == [
        "lora_llm=True without lora_enable=True: VILA applies LoRA only with lora_enable, so "
        "the language model is trained fully here, not LoRA (--set lora_enable=True for LoRA)",
        "tune_language_model is not given: the language model is trained fully here (VILA's "
        "own default is False, frozen: --set tune_language_model=False)",
    ]
    # and with it: LoRA, nothing to say
    assert not [c for c in convert({"lora_enable": True, "lora_llm": True}).changed]


def test_set_gives_a_json_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "args.json"
    src.write_text('{"lora_llm": true, "model_name_or_path": "tiny:llava"}')
    _, out, err = run_convert(capsys, str(src), "--set", "lora_enable=True")
    assert yaml.safe_load(out)["tuning"] == {"preset": "lora_llm"}
    assert "CHANGED" not in err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "not a settings file (binary)"),
        ("caf\xe9".encode("latin-1"), "not UTF-8 text"),
        (b"[1, 2, 3]", "the JSON is a list, not a mapping of settings"),
        (b'{"learning_rate": "fast", "num_train_epochs": [1]}', "cannot convert these settings"),
        (b'{"per_device_train_batch_size": "many"}', "'many' is not a whole number >= 1"),
        (b'{"output_dir": "$OUTPUT_DIR/model"}', "$OUTPUT_DIR"),
        (b"torchrun --nnodes=$(scontrol show hostnames | wc -l) train.py", "$(scontrol"),
        (b'python train.py --run_name "unterminated', "cannot read this line as shell"),
        (b'if [ -z "$X" ]; then echo hi; fi\n', "found no settings"),
    ],
)
def test_bad_input_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: str
) -> None:
    src = tmp_path / "settings.sh"
    src.write_bytes(content)
    code, out, err = run_convert(capsys, str(src))
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and words in err, err


def test_wrong_types_are_reported_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(Exception) as caught:
        convert({"learning_rate": "fast", "num_train_epochs": [1], "seed": "x"})
    text = str(caught.value.render())  # type: ignore[attr-defined]
    for key in ("learning_rate", "num_train_epochs", "seed"):
        assert f"- {key}:" in text


def test_bad_set_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_convert(capsys, str(FIXTURES / "vila_sft.sh"), "--set", "NNODES")
    assert code == 2 and "write --set NAME=value" in err
