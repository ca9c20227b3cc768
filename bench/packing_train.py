"""Packing and grouping on real training steps: tokens/s of the plain loop per batching.

The plain loop (one process, `THREADS` math threads, CPU) trains a small LLaVA on a generated
dataset whose lengths follow `bench.packing`'s `diverse` mix divided by `SCALE`, `repeats`
times per batching, and reports the loop's own tokens/s (real tokens, padding excluded; see
`_combine_runs`) and the padding waste of exactly the timed micro-batches. Every batching
trains the same samples at every step (grouping only reorders within a global batch), so
the timed steps hold the same real tokens in each (`tokens_timed`).
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any

from bench.common import bench_env
from bench.jobs import (
    BENCH_ROOT,
    job_spec,
    run_training,
    shapes_data,
    small_llava,
    trainer_command,
    write_spec,
    write_vila,
)
from bench.packing import BATCHINGS, MAX_LENGTH, length_mix, sampler_batches, waste

SCALE = 8
"""The trained mix is the `diverse` mix with every length divided by this."""
MODEL_HIDDEN, MODEL_LAYERS = 256, 2
"""The decoder of the trained model: wide enough that matmuls, not attention, dominate."""


def _words(rng: random.Random, n: int) -> str:
    """About `n` bytes of lower-case words (the tiny tokenizer has one token per byte)."""
    out: list[str] = []
    size = 0
    while size < n:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[: max(1, n)]


def write_mix_dataset(folder: Path, shapes: Path, n: int, seed: int = 0) -> Path:
    """A VILA JSON of `n` samples following the `diverse` mix / SCALE (the tiny LLaVA takes
    one 16-token image: multi-image samples carry their length as text)."""
    rng = random.Random(seed)
    images = sorted(p.relative_to(shapes).as_posix() for p in (shapes / "images").iterdir())
    rows = []
    overhead = 20  # chat template, in tokens (bytes)
    for i, length in enumerate(length_mix(n, seed, "diverse")):
        budget = max(8, abs(length) // SCALE - overhead - (16 if length > 0 else 0))
        turns = 1 if budget < 60 else 2 if budget < 150 else 3
        convs = []
        for t in range(turns):
            q = _words(rng, max(4, budget // (5 * turns)))
            if t == 0 and length > 0:
                q = "<image>\n" + q
            convs += [
                {"from": "human", "value": q},
                {"from": "gpt", "value": _words(rng, budget * 4 // (5 * turns))},
            ]
        row: dict[str, Any] = {"id": f"mix-{i}", "conversations": convs}
        if length > 0:
            row["image"] = rng.choice(images)
        rows.append(row)
    return write_vila(folder / "mix.json", rows)


def _trained_waste(spec_dict: dict[str, Any], timed: range, grouped: bool, packed: bool) -> float:
    """Padding waste of exactly the micro-batches of the `timed` steps: the trainer's sampler
    order (from the index's length estimates) and each sample's encoded length."""
    from trainer.data.build import build_mixture
    from trainer.data.processors import load_processor
    from vlaunch_core.spec_load import spec_from_dict

    spec = spec_from_dict(spec_dict)
    processor, family = load_processor(spec.model.name_or_path)
    dataset = build_mixture(spec, "train", processor, family)
    micro, accum = int(spec.train.micro_batch_size), int(spec.train.grad_accum_steps)
    order = sampler_batches(
        dataset.lengths(), micro=micro, world=1, accum=accum, grouped=grouped, seed=0
    )[timed.start * accum : timed.stop * accum]
    encoded = {i: dataset[i] for batch in order for i in batch}
    batches = [[e.length for i in batch if (e := encoded[i]) is not None] for batch in order]
    return float(waste(batches, packed, world=1, accum=accum)["padding_waste"])


def _step_tokens(record: dict[str, Any]) -> float:
    """Real tokens (padding excluded) of one logged step: the loop logs tokens/s and time."""
    return float(record["tokens_per_s"]) * float(record["step_time_s"])


def _combine_runs(runs: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """tokens/s of one batching from several runs of the same timed steps.

    Step k holds the same samples in every run (and in every batching), so its time is
    measured once per run: take the median over the runs, step by step, then tokens/s =
    real tokens of all timed steps / the sum of those medians. A stall of one run (other work
    on the machine) moves a median, not the total."""
    if len({len(r) for r in runs}) != 1:
        raise RuntimeError(f"runs logged different numbers of steps: {[len(r) for r in runs]}")
    per_step = [
        statistics.median(float(r["step_time_s"]) for r in step) for step in zip(*runs, strict=True)
    ]
    tokens = [_step_tokens(r) for r in runs[0]]
    return {
        "tokens_timed": round(sum(tokens)),
        "tokens_per_s": round(sum(tokens) / sum(per_step), 1),
        "step_time_s": round(statistics.median(per_step), 4),
    }


THREADS = 1
"""Math threads of each training run: with one, other work on the machine slows a run down
by its share of a core; with one per core, an OpenMP thread waiting for a busy core stalls
every step (measured at a load average of 4 to 6: a median step of 7.4 s with torch's
default threads, 1.1 s with one, on the same batches)."""


def train_tokens_per_s(
    *,
    steps: int,
    warmup: int,
    repeats: int,
    num_samples: int,
    batchings: tuple[str, ...] = tuple(BATCHINGS),
    root: Path | None = None,
) -> dict[str, Any]:
    """tokens/s of the plain loop (1 process, `THREADS` threads) for each batching on the
    generated mix. The runs alternate between batchings (repeat 1 of each, then repeat 2, ...)
    so that a change in the machine's load hits all of them alike."""
    root = root or BENCH_ROOT
    work = root / "packing"
    shapes = shapes_data(root)
    model = small_llava(MODEL_HIDDEN, MODEL_LAYERS, root)
    data_path = write_mix_dataset(work, shapes, num_samples)
    dataset = {"data_path": str(data_path), "media_dir": str(shapes)}
    specs: dict[str, dict[str, Any]] = {}
    for label in batchings:
        grouped, packed = BATCHINGS[label]
        specs[label] = job_spec(
            f"bench-packing-{'packed' if packed else 'grouped' if grouped else 'random'}",
            model=str(model),
            datasets={"mix": dataset},
            out_dir=work / "runs",
            data={"max_length": MAX_LENGTH // SCALE, "group_by_length": grouped, "packing": packed},
            train={
                "global_batch_size": 16,
                "micro_batch_size": 4,
                "grad_accum_steps": 4,
                "max_steps": steps,
                "seed": 0,
            },
        )
    env = bench_env(threads=THREADS)
    runs: dict[str, list[list[dict[str, Any]]]] = {label: [] for label in batchings}
    for _ in range(repeats):
        for label, spec in specs.items():
            command = trainer_command(write_spec(spec, work))
            result = run_training(command, work / "runs" / spec["name"], env=env)
            runs[label].append(result.train_records(skip=warmup))
    rows: list[dict[str, Any]] = []
    for label, spec in specs.items():
        grouped, packed = BATCHINGS[label]
        rows.append(
            {
                "batching": label,
                "padding_waste": round(
                    _trained_waste(spec, range(warmup, steps), grouped, packed), 4
                ),
                **_combine_runs(runs[label]),
                "runs": repeats,
            }
        )
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup"] = round(row["tokens_per_s"] / base, 3)
    return {
        "model": f"LLaVA: tiny CLIP tower + Llama decoder {MODEL_HIDDEN} wide, {MODEL_LAYERS} "
        f"layers (random init), LoRA r=16, fp32, SDPA, 1 process, {THREADS} thread",
        "data": f"{num_samples} generated samples, `diverse` lengths / {SCALE}, max_length "
        f"{MAX_LENGTH // SCALE}; 48 px images (16 image tokens); no loader workers",
        "batch": "global 16 = micro 4 x accumulation 4, 1 rank",
        "steps": steps,
        "warmup_steps_skipped": warmup,
        "rows": rows,
    }
