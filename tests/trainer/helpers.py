"""Shared by the trainer and e2e tests: a small shapes dataset, job specs, launching runs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def make_shapes(folder: Path, train: int = 96, eval_: int = 32) -> Path:
    """The synthetic shapes dataset with `train` / `eval_` colour questions (no videos)."""
    from vlaunch_core.data.synth import SynthSizes, synthesize

    synthesize(folder, SynthSizes(train=train, eval=eval_, video_train=0, video_eval=0), seed=3)
    return folder


def write_job(folder: Path, shapes: Path, *, name: str = "job", **sections: Any) -> Path:
    """A tiny-LLaVA LoRA job on `shapes`, runs under `folder/runs`; `sections` update it."""
    folder.mkdir(parents=True, exist_ok=True)
    registry = {
        "shapes_train": {"data_path": str(shapes / "train.json"), "media_dir": str(shapes)},
        "shapes_eval": {"data_path": str(shapes / "eval.json"), "media_dir": str(shapes)},
    }
    (folder / "registry.yaml").write_text(yaml.safe_dump(registry))
    job: dict[str, Any] = {
        "name": name,
        "model": {"name_or_path": "tiny:llava"},
        "data": {
            "registry": ["registry.yaml"],
            "mixture": "shapes_train",
            "max_length": 256,
            "num_workers": 0,
        },
        "tuning": {"preset": "lora_llm"},
        "train": {
            "global_batch_size": 8,
            "micro_batch_size": 2,
            "max_steps": 6,
            "lr": 2e-3,
            "precision": "fp32",
            "gradient_checkpointing": False,
            "strategy": "ddp",
            "checkpoint_every": 2,
            "keep_last": 2,
            "seed": 7,
            "warmup_steps": 2,
        },
        "resources": {"profile": "cpu", "gpus_per_node": 2},
        "output": {"dir": str(folder / "runs")},
    }
    for section, values in sections.items():
        job.setdefault(section, {}).update(values)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
            "PYTHONFAULTHANDLER": "1",  # a child crashing in native code shows its stacks
        }
    )
    env.pop("VLAUNCH_FAULT", None)
    env.update(extra)
    return env


def run_without_vlaunch(script: Path, jobs: list[dict[str, Any]], folder: Path) -> Any:
    """Run `script jobs.json` in a fresh interpreter that cannot import vlaunch (no
    PYTHONPATH, offline, one thread); return the JSON its last stdout line prints."""
    (folder / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(script), str(folder / "jobs.json")],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_trainer(
    job: Path, *overrides: str, nproc: int = 1, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m trainer.run` (nproc 1) or `torchrun --nproc_per_node N -m trainer.run`."""
    argv = ["-m", "trainer.run", str(job), *overrides, "--quiet"]  # argparse: key=value first
    if nproc > 1:
        return torchrun(*argv, cwd=job.parent, nproc=nproc, timeout=timeout, **env)
    return subprocess.run(
        [PYTHON, *argv],
        cwd=job.parent,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def torchrun(
    *argv: str, cwd: Path, nproc: int = 2, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    """`torchrun --nproc_per_node N ARGV` on a free port; ARGV is a script and its arguments
    or `-m module ...`."""
    return subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
         "--master_port", str(free_port()), *argv],
        cwd=cwd,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )  # fmt: skip


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def records(run_dir: Path, kind: str = "train") -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def trained_weights(checkpoint: Path) -> dict[str, Any]:
    """Every trainable tensor of a checkpoint (adapter and non-LoRA trainables)."""
    from safetensors.torch import load_file

    out = dict(load_file(str(checkpoint / "adapter" / "adapter_model.safetensors")))
    extra = checkpoint / "non_lora_trainables.safetensors"
    if extra.is_file():
        out.update(load_file(str(extra)))
    return out


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# What a failed child printed that says why, in order of preference: the first such line
# becomes the first line of `explain` (the one pytest's summary and `make test` show).
CAUSES = (
    re.compile(r"^error: .*", re.M),  # a user error (trainer.run, vlaunch)
    re.compile(r"^(terminate called.*|Fatal Python error: .*)", re.M),  # a native crash
    re.compile(r"^\s*rank\s*: (\d+).*\n\s*exitcode\s*: (-?\d+.*)$", re.M),  # torchrun
    re.compile(r"^\w*(Error|Exception): .*", re.M),  # the last line of a traceback
)


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    out, err = proc.stdout[-4000:], proc.stderr[-6000:]
    head = f"exit {proc.returncode}"
    root = proc.stderr[max(proc.stderr.rfind("Root Cause"), 0) :]  # torchrun's failed rank
    for cause in CAUSES:
        found = cause.search(root if cause.groups == 2 else proc.stderr)
        if found:
            why = found.group(0) if cause.groups < 2 else f"rank {found[1]} exit {found[2]}"
            head += f": {' '.join(why.split())[:200]}"
            break
    return f"{head}\n--- stdout\n{out}\n--- stderr\n{err}"


def wait_for_step(run: Path, step: int, proc: subprocess.Popen[str], timeout: float) -> None:
    """Block until metrics.jsonl shows a training step >= `step` (the run is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-5000:]
        try:
            lines = (run / "metrics.jsonl").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            with contextlib.suppress(ValueError):
                r = json.loads(line)
                if r.get("kind") == "train" and r["step"] >= step:
                    return
        time.sleep(0.2)  # polling a condition, with a deadline
    raise AssertionError(f"no step {step} in {run}/metrics.jsonl after {timeout}s")
