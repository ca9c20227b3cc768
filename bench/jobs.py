"""Models, data and job specs that the CPU benchmarks train, written under `runs/bench/`.

Everything is built from code (no downloads) and cached: a second `make bench` reuses it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.common import BIN, REPO

BENCH_ROOT = REPO / "runs" / "bench"


def shapes_data(root: Path = BENCH_ROOT, train: int = 256) -> Path:
    """The synthetic shapes dataset (colour questions on 48 px images), built once."""
    from vlaunch_core.data.synth import SynthSizes, synthesize

    folder = root / f"shapes-{train}"
    synthesize(
        folder, SynthSizes(train=train, eval=8, video_train=0, video_eval=0), if_missing=True
    )
    return folder


def small_llava(hidden: int, layers: int, root: Path = BENCH_ROOT) -> Path:
    """`tiny:llava` (vision tower, projector input, tokenizer, processor) with a bigger Llama
    decoder: `hidden` wide, `layers` deep. Random weights, seed 0; built once."""
    return small_vlm("llava", hidden, layers, root=root)


def small_vlm(
    family: str,
    hidden: int,
    layers: int,
    *,
    vocab: int | None = None,
    max_pixels: int | None = None,
    root: Path = BENCH_ROOT,
) -> Path:
    """`tiny:<family>` (vision tower, tokenizer, processor) with a bigger decoder: `hidden`
    wide (64-wide heads), `layers` deep, and `vocab` rows of embeddings and output layer when
    given (the tokenizer stays byte-level: the extra rows are never input, as in a real
    checkpoint's unused vocabulary). M-RoPE sections are scaled to the head width.
    `max_pixels` raises the image processor's pixel budget (Qwen-VL's `size.longest_edge`;
    the tiny processors resize anything above 4,096 pixels down to 16 image tokens). Random
    weights, seed 0; built once."""
    name = (
        f"{family}-h{hidden}-l{layers}"
        + (f"-v{vocab}" if vocab else "")
        + (f"-px{max_pixels}" if max_pixels else "")
    )
    target = root / "models" / name
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from trainer.models.tiny.folder import tiny_model_path

    tiny = tiny_model_path(family)
    config: Any = AutoConfig.from_pretrained(tiny)
    text = config.get_text_config()
    old_hidden = text.hidden_size
    old_head = old_hidden // text.num_attention_heads
    heads = max(1, hidden // 64)
    text.hidden_size = hidden
    text.intermediate_size = 4 * hidden
    text.num_hidden_layers = layers
    text.num_attention_heads = heads
    text.num_key_value_heads = heads
    if hasattr(text, "head_dim"):
        text.head_dim = hidden // heads
    if hasattr(text, "layer_types") and text.layer_types is not None:
        text.layer_types = [text.layer_types[0]] * layers
    vision = getattr(config, "vision_config", None)
    if vision is not None:  # the merger's output width is the decoder's (Qwen-VL)
        if getattr(vision, "out_hidden_size", None) == old_hidden:
            vision.out_hidden_size = hidden
        elif hasattr(vision, "embed_dim") and getattr(vision, "hidden_size", None) == old_hidden:
            vision.hidden_size = hidden
    rope = getattr(text, "rope_parameters", None) or {}
    if "mrope_section" in rope:
        factor = (hidden // heads) // old_head
        rope["mrope_section"] = [factor * x for x in rope["mrope_section"]]
    if vocab is not None:
        text.vocab_size = vocab
        if hasattr(config, "vocab_size"):
            config.vocab_size = vocab
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=target.parent))
    try:
        for f in tiny.iterdir():  # tokenizer, processor, chat template
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        if max_pixels is not None:
            _raise_pixel_budget(tmp / "processor_config.json", max_pixels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        model.save_pretrained(tmp)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _raise_pixel_budget(path: Path, max_pixels: int) -> None:
    """Set the image processor's largest image, in pixels (Qwen-VL's `size.longest_edge`)."""
    config = json.loads(path.read_text())
    size = config.get("image_processor", {}).get("size", {})
    if "longest_edge" not in size:
        raise ValueError(f"{path}: no image_processor.size.longest_edge to raise")
    size["longest_edge"] = max_pixels
    path.write_text(json.dumps(config, indent=2) + "\n")


def job_spec(
    name: str,
    *,
    model: str,
    datasets: dict[str, dict[str, Any]],
    out_dir: Path,
    train: dict[str, Any],
    data: dict[str, Any] | None = None,
    tuning: dict[str, Any] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """A CPU job spec training `model` on inline `datasets` (all mixed once)."""
    return {
        "name": name,
        "model": {"name_or_path": model},
        "data": {
            "mixture": "+".join(datasets),
            "datasets": datasets,
            "max_length": 512,
            "num_workers": 0,
            **(data or {}),
        },
        "tuning": tuning or {"preset": "lora_llm"},
        "train": {
            "lr": 1e-3,
            "precision": "fp32",
            "gradient_checkpointing": False,
            "strategy": "ddp",
            "checkpoint_every": 1_000_000,
            "log_every": 1,
            "seed": 0,
            **train,
        },
        "resources": {"profile": "cpu", "gpus_per_node": workers},
        "output": {"dir": str(out_dir), "export": "none"},
        "tracking": {"tensorboard": False},
    }


def write_spec(spec: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@dataclass
class TrainRun:
    """One training process: its step records and when its first step was done."""

    records: list[dict[str, Any]]
    first_step_s: float | None
    """Seconds from launching the command to the first step's metrics record."""
    wall_s: float

    def train_records(self, skip: int = 0) -> list[dict[str, Any]]:
        """The optimizer steps' records, the first `skip` (warm-up) left out."""
        return [r for r in self.records if r.get("kind") == "train"][skip:]

    def step_times(self, skip: int) -> list[float]:
        return [float(r["step_time_s"]) for r in self.train_records(skip)]


def run_training(
    argv: list[str], run_dir: Path, *, env: dict[str, str], timeout: float = 900
) -> TrainRun:
    """Run a training command to its end and read `run_dir/metrics.jsonl`. `env`: the whole
    environment (`bench.common.bench_env`, which fixes the math threads).

    A thread watches for the metrics file's first line: the time from launch to the first
    finished optimizer step (start-up: imports, process group or Ray, model, data loader).
    """
    from trainer.metrics import read_metrics

    shutil.rmtree(run_dir, ignore_errors=True)
    metrics = run_dir / "metrics.jsonl"
    first: dict[str, float] = {}
    done = threading.Event()

    def watch(t0: float) -> None:
        while not done.wait(0.01):
            try:
                if metrics.stat().st_size > 0:
                    first["t"] = time.perf_counter() - t0
                    return
            except OSError:
                pass

    t0 = time.perf_counter()
    watcher = threading.Thread(target=watch, args=(t0,), daemon=True)
    watcher.start()
    try:
        proc = subprocess.run(
            argv,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        done.set()
        watcher.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    return TrainRun(read_metrics(metrics), first.get("t"), wall)


def trainer_command(spec_path: Path) -> list[str]:
    """The plain loop in one process."""
    return [str(BIN / "python"), "-m", "trainer.run", str(spec_path)]


def write_vila(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return path


def fresh_run_dir(spec: Any) -> None:
    """Remove the run directory of `spec` (a benchmark's run must start at step 0: a run
    directory left by an earlier benchmark run would be resumed)."""
    shutil.rmtree(Path(spec.output.dir).expanduser() / spec.name, ignore_errors=True)
