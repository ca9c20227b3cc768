"""Malformed job specs: each gives a one-screen error naming the key and the fix, exit 2,
no traceback. Runs `vlaunch validate` in-process (and a few in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.cli import main

BASE: dict[str, Any] = {
    "name": "t",
    "model": {"name_or_path": "tiny:llava"},
    "data": {
        "mixture": "shapes_train",
        "datasets": {"shapes_train": {"data_path": "train.json"}},
    },
    "resources": {"profile": "a100-80gb", "nodes": 1, "gpus_per_node": 8},
    "train": {"global_batch_size": 64},
}


def write_spec(tmp_path: Path, data: Any) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Any, *overrides: str
) -> tuple[int, str]:
    path = write_spec(tmp_path, data)
    code = main(["validate", str(path), *overrides])
    out = capsys.readouterr()
    return code, out.err + out.out


def test_base_spec_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = validate(tmp_path, capsys, BASE)
    assert code == 0, text
    assert "global_batch_size: 64" in text
    assert "preset: lora_llm" in text  # defaults are written out


# (overrides, substrings that must all appear in the error)
CASES: list[tuple[list[str], list[str]]] = [
    (["trainn.lr=1"], ["trainn", "Did you mean 'train'"]),
    (["train.lrr=1e-4"], ["train.lrr", "Did you mean 'lr'"]),
    (["train.global_batch=64"], ["train.global_batch", "'global_batch_size'"]),
    (["train.global_batch_size=many"], ["train.global_batch_size", "integer"]),
    (["train.lr=-1"], ["train.lr", "greater than 0"]),
    (["train.global_batch_size=0"], ["train.global_batch_size", "greater than or equal to 1"]),
    (["train.micro_batch_size=0"], ["train.micro_batch_size"]),
    (["train.strategy=zero4"], ["train.strategy", "'zero3'"]),
    (["tuning.preset=qlora_llm", "train.strategy=fsdp"], ["train.strategy", "QLoRA", "ddp"]),
    (
        ["train.deterministic=true", "train.strategy=zero2"],
        ["train.deterministic", "'zero2'", "train.strategy=ddp"],
    ),
    (["data.mixture=shapes_trian"], ["data.mixture", "shapes_trian", "shapes_train"]),
    (["tuning.preset=lora_everything"], ["tuning.preset", "lora_everything", "lora_llm"]),
    (
        ["tuning.preset=ln_vt", "tuning.vision_tower=frozen", "tuning.projector=frozen"],
        ["tuning", "nothing would be trained"],
    ),
    (["tuning.preset=fft", "tuning.lora.r=8"], ["tuning.lora", "no module is tuned with LoRA"]),
    (["train.warmup_steps=10", "train.warmup_ratio=0.1"], ["train.warmup_steps", "keep one"]),
    (["train.max_steps=10", "train.epochs=2"], ["train.max_steps", "keep one"]),
    (["train.eval_every=10"], ["train.eval_every", "data.eval_mixture"]),
    (["data.packing=true", "data.group_by_length=true"], ["data.packing", "group_by_length"]),
    (["resources.profile=a100"], ["resources.profile", "a100-80gb"]),
    (
        [
            "resources.profile=cpu",
            "resources.gpus_per_node=2",
            "train.precision=fp16",
            "train.global_batch_size=8",
        ],
        ["train.precision", "fp16 is not supported on CPU"],
    ),
    (["env.HF_TOKEN=abc"], ["env.HF_TOKEN", "secret", "export HF_TOKEN"]),
    (
        ["tracking.wandb.project=p", "tracking.wandb.api_key=xyz"],
        ["tracking.wandb.api_key", "secrets never go in a job spec"],
    ),
    (["name=a/b"], ["name", "without '/'"]),
    (
        ["resources.gpus_per_node=7", "train.global_batch_size=2048"],
        ["train.global_batch_size", "2044", "2051", "batch_rounding"],
    ),
    (["slurm.time=25 hours"], ["slurm.time", "HH:MM:SS"]),
    (["tuning.lora.dropout=1.5"], ["tuning.lora.dropout", "less than 1"]),
    (["model.name_or_path=tiny:lava"], ["model.name_or_path", "'llava'"]),
    (["data.num_workers=-1"], ["data.num_workers", "'auto'"]),
    (["tuning.lr_multipliers.vision_tower=0.05"], ["tuning.lr_multipliers.vision_tower", "frozen"]),
    (["slurm.variant=srun_lora"], ["slurm.variant", "srun_lora_llm"]),
    (["data.video.fps=2", "data.video.num_frames=16"], ["data.video.fps", "keep one"]),
    (
        ["train.grad_accum_steps=2", "resources.nodes=8", "train.global_batch_size=64"],
        ["accumulation 2", "128"],
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_malformed_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], expected: list[str]
) -> None:
    code, text = validate(tmp_path, capsys, BASE, *overrides)
    assert code == 2, text
    assert "Traceback" not in text
    for needle in expected:
        assert needle in text, f"{needle!r} not in:\n{text}"
    assert "fix" in text or "Did you mean" in text, text
    assert len(text.splitlines()) <= 25, text  # one screen


def test_missing_sections_reported_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = validate(tmp_path, capsys, {"name": "t", "train": {"lr": -1, "epocs": 2}})
    assert code == 2
    for needle in (
        "model: required key is missing",
        "data: required key is missing",
        "train.lr",
        "train.epocs",
        "Did you mean 'epochs'",
        "4 problems",
    ):
        assert needle in text, text


def test_yaml_syntax_error_names_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = validate(tmp_path, capsys, "name: t\nmodel: [unclosed\n")
    assert code == 2
    assert "job.yaml:" in text and "invalid YAML" in text


def test_spec_must_be_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = validate(tmp_path, capsys, "- a\n- b\n")
    assert code == 2
    assert "YAML mapping" in text


def test_override_into_scalar_is_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = validate(tmp_path, capsys, BASE, "name.x=1")
    assert code == 2
    assert "'name' is a str, not a section" in text


def test_bad_argument_is_not_an_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = validate(tmp_path, capsys, BASE, "--nodez", "3")
    assert code == 2
    assert "unrecognised argument" in text


def test_subprocess_exit_code_and_no_traceback(tmp_path: Path) -> None:
    path = write_spec(tmp_path, {**BASE, "trian": {}})
    proc = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "Did you mean 'train'" in proc.stderr


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["lora_llm", "fft", "ln_vt", "qlora_llm"])
def test_resolved_spec_validates_again(tmp_path: Path, preset: str) -> None:
    """`vlaunch validate` prints every default; that output is itself a valid spec (the
    Slurm and Kubernetes backends ship it to the cluster)."""
    from vlaunch_core.spec_load import load_spec

    first = load_spec(write_spec(tmp_path, BASE), [f"tuning.preset={preset}", "train.max_steps=10"])
    again = tmp_path / "again.yaml"
    again.write_text(first.to_yaml())
    assert load_spec(again) == first


def test_flag_strings_stay_strings(tmp_path: Path) -> None:
    import argparse

    from launcher.commands.common import load_job
    from launcher.commands.flags import add_field_flag

    parser = argparse.ArgumentParser()
    add_field_flag(parser, "--account", "slurm.account")
    args = parser.parse_args(["--account", "123"])
    args.job = str(write_spec(tmp_path, BASE))
    assert load_job(args).slurm.account == "123"
