"""`vlaunch data check` and `vlaunch data synth` end to end, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.data.test_check import faulty_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def vlaunch(tiny_root: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `vlaunch ARGS` in a subprocess (tiny models cached under this session's folder)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NO_COLOR": "1",
        "VLAUNCH_CACHE": str(tiny_root / "cli"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "launcher.cli", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    return run


def test_faulty_dataset_fails_with_every_fault(
    vlaunch: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    data, expected = faulty_dataset(tmp_path / "ds")
    r = vlaunch(
        "data",
        "check",
        str(data),
        "--media-dir",
        str(data.parent),
        "--json",
        "--model",
        "tiny:qwen2_vl",
        "--max-length",
        "512",
        "--overlength",
        "error",
    )
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    found = {(p["kind"], p["index"]) for p in out["problems"]}
    assert found == expected
    assert out["summary"]["tokens"]["model"] == "tiny:qwen2_vl"
    # The human report groups problems by kind and ends with the verdict.
    r = vlaunch("data", "check", str(data), "--media-dir", str(data.parent))
    assert r.returncode == 1
    assert "missing media files (missing_media, 2)" in r.stdout
    assert "sample 4: image 0 '../../etc/passwd'" in r.stdout
    assert "FAILED" in r.stdout


def test_clean_job_passes_and_registry_mode(
    vlaunch: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, shapes: Path
) -> None:
    reg = tmp_path / "reg.yaml"
    reg.write_text(
        yaml.safe_dump(
            {
                "train": {
                    "_target_": "llava.data.LLaVADataset",
                    "data_path": str(shapes / "train.json"),
                    "media_dir": str(shapes),
                },
                "kinds": {"data_path": str(shapes / "kinds_eval.jsonl"), "format": "messages"},
                "video": {"data_path": str(shapes / "video_eval.json"), "is_video": True},
            }
        )
    )
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "model": {"name_or_path": "tiny:qwen2_vl"},
                "data": {
                    "registry": ["reg.yaml"],
                    "mixture": "train+video*2",
                    "eval_mixture": "kinds",
                    "max_length": 1024,
                },
                "resources": {"profile": "cpu", "gpus_per_node": 1},
                "train": {"global_batch_size": 4},
            }
        )
    )
    r = vlaunch("data", "check", str(job), "--json", "--decode")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)["summary"]
    assert summary["errors"] == 0
    files = json.loads((shapes / "meta.json").read_text())["files"]
    assert summary["samples"] == sum(
        files[f] for f in ("train.json", "video_eval.json", "kinds_eval.jsonl")
    )
    assert summary["tokens"]["counted"] == summary["samples"]
    r = vlaunch("data", "check", "--registry", str(reg), "--mixture", "train+kinds")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout and "tokens: not counted" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "check"], "nothing to check"),
        (["data", "check", "--mixture", "A"], "--registry and --mixture go together"),
        (["data", "check", "nope.json"], "no such file"),
        (["data", "check", "examples/registry.yaml"], "is not a job spec"),
        (
            ["data", "check", "--registry", "examples/registry.yaml", "--mixture", "shapes_trian"],
            "Did you mean 'shapes_train'",
        ),
    ],
)
def test_bad_invocations_exit_2(
    vlaunch: Callable[..., subprocess.CompletedProcess[str]], args: list[str], message: str
) -> None:
    r = vlaunch(*args)
    assert r.returncode == 2
    assert message in r.stderr


def test_synth_if_missing(
    vlaunch: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    out = tmp_path / "shapes"
    r = vlaunch(
        "data",
        "synth",
        str(out),
        "--train",
        "8",
        "--eval",
        "4",
        "--video-train",
        "2",
        "--video-eval",
        "2",
        "--if-missing",
    )
    assert r.returncode == 0, r.stderr
    meta = out / "meta.json"
    stamp = meta.stat().st_mtime_ns
    r = vlaunch("data", "synth", str(out), "--if-missing")
    assert r.returncode == 0 and "nothing written" in r.stdout
    assert meta.stat().st_mtime_ns == stamp
    assert json.loads(meta.read_text())["files"]["train.json"] == 8
