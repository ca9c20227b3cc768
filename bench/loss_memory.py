"""Peak host memory of LoRA steps with the plain loss (full logits) and the chunked loss.

A Qwen2-VL-shaped model with Qwen's 152,064-row vocabulary (`bench.jobs.small_vlm`: the tiny
Qwen2-VL's vision tower and processor, a 2-layer decoder 256 wide, random weights) trains
LoRA on the language model (`lora_llm`) in the plain loop, one process, fp32 on CPU, on
generated samples of one image and a long answer (micro batch 2 x 1024 tokens). Each variant
runs in a fresh process (`--child`), which reads its own kernel high-water mark (VmHWM):

- `process peak`: the whole process (imports, loading, steps), what `ru_maxrss` reports;
- `step peak`: the high-water mark of the training steps alone, reset (`/proc/self/clear_refs`)
  after setup, and `step growth`, that peak minus the RSS when the steps started.

    python -m bench.loss_memory            # both variants, alternating, `--repeats` each
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import BIN, REPO, bench_env, proc_status_bytes
from bench.jobs import (
    BENCH_ROOT,
    fresh_run_dir,
    job_spec,
    shapes_data,
    small_vlm,
    write_spec,
    write_vila,
)

VOCAB = 152_064
HIDDEN, LAYERS = 256, 2
MICRO, LENGTH, STEPS = 2, 1024, 3
VARIANTS = ("plain", "chunked")


def child(job: Path, variant: str, out: Path) -> None:
    """One training run in this process; writes its memory numbers to `out` (JSON)."""
    import resource

    import peft  # noqa: F401  (imported before the baseline, as every library)
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from trainer.loop import Recipe
    from vlaunch_core.spec_load import load_spec

    spec = load_spec(job, [f"train.loss={variant}", f"name=loss-{variant}"])
    fresh_run_dir(spec)
    start = proc_status_bytes("VmRSS")
    recipe = Recipe(spec, quiet=True)
    try:
        recipe.setup()
        setup_peak = proc_status_bytes("VmHWM")
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
        before_steps = proc_status_bytes("VmRSS")
        result = recipe.train()
        assert result.state == "finished", result
        step_peak = proc_status_bytes("VmHWM")
        kind = getattr(recipe.loss, "kind", "?")
    finally:
        recipe.cleanup()
    out.write_text(
        json.dumps(
            {
                "variant": variant,
                "loss_kind": kind,
                "start": start,
                "setup_peak": setup_peak,
                "before_steps": before_steps,
                "step_peak": step_peak,
                "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "loss": result.loss,
            }
        )
    )


def _words(rng: random.Random, n: int) -> str:
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < n:
        out.append("".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 8))))
    return " ".join(out)[:n]


def write_job(root: Path) -> tuple[Path, dict[str, Any]]:
    shapes = shapes_data(root)
    model = small_vlm("qwen2_vl", HIDDEN, LAYERS, vocab=VOCAB, root=root)
    work = root / "loss_memory"
    rng = random.Random(0)
    images = sorted(p.relative_to(shapes).as_posix() for p in (shapes / "images").iterdir())
    rows = [
        {
            "id": f"long-{i}",
            "image": rng.choice(images),
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe it at length."},
                {"from": "gpt", "value": _words(rng, 2 * LENGTH)},  # cut to max_length
            ],
        }
        for i in range(MICRO * STEPS * 2)
    ]
    data = write_vila(work / "long.json", rows)
    spec = job_spec(
        "loss-memory",
        model=str(model),
        datasets={"long": {"data_path": str(data), "media_dir": str(shapes)}},
        out_dir=work / "runs",
        data={"max_length": LENGTH, "overlength": "truncate_text"},
        train={
            "global_batch_size": MICRO,
            "micro_batch_size": MICRO,
            "grad_accum_steps": 1,
            "max_steps": STEPS,
            "host_memory_every": 1,
        },
    )
    return write_spec(spec, work), spec


def run(repeats: int = 2, root: Path | None = None) -> dict[str, Any]:
    root = root or BENCH_ROOT
    job, _ = write_job(root)
    env = bench_env(threads=1)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for r in range(repeats):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            out = job.parent / f"memory-{variant}.json"
            out.unlink(missing_ok=True)
            cmd = [str(BIN / "python"), "-m", "bench.loss_memory", "--child", str(job), variant]
            proc = subprocess.run(
                [*cmd, str(out)], cwd=REPO, env=env, capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}"
                )
            results[variant].append(json.loads(out.read_text()))
    rows = []
    for variant in VARIANTS:
        runs = results[variant]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> int:
            return int(statistics.median(x[key] for x in runs))

        rows.append(
            {
                "variant": variant,
                "loss_kind": runs[0]["loss_kind"],
                "process_peak": med("ru_maxrss"),
                "step_peak": med("step_peak"),
                "step_growth": med("step_peak") - med("before_steps"),
                "setup_peak": med("setup_peak"),
                "loss": runs[0]["loss"],
                "runs": len(runs),
            }
        )
    plain, chunked = rows
    return {
        "model": f"Qwen2-VL-shaped: tiny vision tower, decoder {HIDDEN} wide, {LAYERS} layers, "
        f"vocabulary {VOCAB} (random weights), LoRA r=16 on the decoder (`lora_llm`), fp32",
        "batch": f"micro batch {MICRO} x {LENGTH} tokens (one image + a long answer), "
        f"{STEPS} steps, 1 process, 1 thread",
        "rows": rows,
        "ratio_process_peak": round(chunked["process_peak"] / plain["process_peak"], 3),
        "ratio_step_growth": round(chunked["step_growth"] / max(1, plain["step_growth"]), 3),
        "command": f"python -m bench.loss_memory --repeats {repeats}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loss_memory", description=__doc__)
    parser.add_argument("--child", nargs=3, metavar=("JOB", "VARIANT", "OUT"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.child:
        job, variant, out = args.child
        child(Path(job), variant, Path(out))
        return 0
    print(json.dumps(run(args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
