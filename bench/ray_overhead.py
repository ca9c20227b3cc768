"""Ray overhead: the same job run by torchrun and by `vlaunch local` on Ray Train.

Both run `trainer.loop` with 2 CPU ranks (gloo, DDP), the same model, data, batch and steps;
only the host differs. The environment is the same too: each command gets the same variables
(`bench_env`), which fix one math thread per rank (`OMP_NUM_THREADS=1`, `MKL_NUM_THREADS=1`);
the spec's `env` repeats them for the Ray workers. Neither host is left to choose: torchrun
sets `OMP_NUM_THREADS=1` only when it is unset, Ray sets it to the worker's CPUs only when it
is unset. `bench/rank_probe` records what every rank really runs with (torch's intra-op and
inter-op threads, the variables, the CPU affinity); the benchmark fails when the two hosts
differ there. No data-loader workers (`data.num_workers: 0`) in either.

Repetitions alternate the order (torchrun first, then Ray first, ...) so that a drift in the
machine's load hits both alike, and each run records the load average before it. Per run:
the median step time after `warmup` steps, the mean (throughput), and the time from launching
the command to its first finished step.

Target (issue 9): Ray's steady-state step time within 3% of torchrun's.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

from bench.common import BIN, REPO, bench_env, summarize, thread_env
from bench.jobs import BENCH_ROOT, job_spec, run_training, shapes_data, small_llava, write_spec

TARGET_RATIO = 1.02
"""Issue 17: Ray / torchrun step time at most 1.02 (an earlier issue asked for 1.03)."""
THREADS_PER_RANK = 1
RANKS = 2
PROBE = REPO / "bench" / "rank_probe"


def commands(spec_path: Path) -> dict[str, list[str]]:
    return {
        "torchrun": [
            str(BIN / "torchrun"),
            "--nproc_per_node",
            str(RANKS),
            "-m",
            "trainer.run",
            str(spec_path),
        ],
        "ray": [
            str(BIN / "vlaunch"),
            "local",
            str(spec_path),
            "--workers",
            str(RANKS),
            "--no-plan",
        ],
    }


def probe_env(folder: Path) -> dict[str, str]:
    """The variables that turn `bench/rank_probe` on, writing into `folder`."""
    path = os.pathsep.join(p for p in (str(PROBE), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "VLAUNCH_BENCH_PROBE": str(folder)}


def read_probe(folder: Path) -> list[dict[str, Any]]:
    """What each rank of the last run reported, by rank (pid left out)."""
    ranks = [json.loads(p.read_text()) for p in sorted(folder.glob("rank-*.json"))]
    return sorted(({k: v for k, v in r.items() if k != "pid"} for r in ranks), key=str)


def write_job(
    work: Path,
    *,
    steps: int,
    hidden: int = 256,
    layers: int = 4,
    global_batch_size: int = 16,
    micro_batch_size: int = 4,
    root: Path = BENCH_ROOT,
) -> tuple[Path, Path]:
    """The benchmark's job spec, written into `work`: its path and the run's directory."""
    model = small_llava(hidden, layers, root)
    shapes = shapes_data(root)
    dataset = {"data_path": str(shapes / "train.json"), "media_dir": str(shapes)}
    spec = job_spec(
        "bench-ray-overhead",
        model=str(model),
        datasets={"shapes": dataset},
        out_dir=work / "runs",
        train={
            "global_batch_size": global_batch_size,
            "micro_batch_size": micro_batch_size,
            "max_steps": steps,
        },
        workers=RANKS,
    )
    spec["env"] = thread_env(THREADS_PER_RANK)  # the Ray workers get what `bench_env` sets
    return write_spec(spec, work), work / "runs" / spec["name"]


def run(
    *,
    repeats: int = 3,
    steps: int = 30,
    warmup: int = 3,
    hidden: int = 256,
    layers: int = 4,
    global_batch_size: int = 16,
    micro_batch_size: int = 4,
    root: Path = BENCH_ROOT,
) -> dict[str, Any]:
    """Median step time and start-up time of torchrun vs Ray, `repeats` runs each."""
    work = root / "ray_overhead"
    spec_path, run_dir = write_job(
        work,
        steps=steps,
        hidden=hidden,
        layers=layers,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        root=root,
    )
    probe = work / "probe"
    env = bench_env(threads=THREADS_PER_RANK, **probe_env(probe))
    argvs = commands(spec_path)
    per_mode: dict[str, list[dict[str, Any]]] = {mode: [] for mode in argvs}
    ranks: dict[str, list[dict[str, Any]]] = {}
    for i in range(repeats):
        for mode in list(argvs) if i % 2 == 0 else list(argvs)[::-1]:
            shutil.rmtree(probe, ignore_errors=True)
            probe.mkdir(parents=True)
            load = os.getloadavg()[0]
            result = run_training(argvs[mode], run_dir, env=env)
            times = result.step_times(skip=warmup)
            if len(times) < 3:
                raise RuntimeError(f"{mode}: only {len(times)} steps after warm-up")
            ranks[mode] = _same_in_every_run(mode, ranks.get(mode), read_probe(probe))
            per_mode[mode].append(
                {
                    "median_step_s": statistics.median(times),
                    "mean_step_s": statistics.fmean(times),
                    "first_step_s": result.first_step_s,
                    "wall_s": result.wall_s,
                    "steps_timed": len(times),
                    "load_average_before": round(load, 2),
                }
            )
    shutil.rmtree(run_dir, ignore_errors=True)
    if ranks["torchrun"] != ranks["ray"]:
        raise RuntimeError(f"the hosts' ranks differ: {ranks}")
    modes = {mode: _combine(runs) for mode, runs in per_mode.items()}
    ratio = modes["ray"]["median_step_s"] / modes["torchrun"]["median_step_s"]
    mean_ratio = modes["ray"]["mean_step_s"] / modes["torchrun"]["mean_step_s"]
    return {
        "name": "ray_overhead",
        "setup": {
            "model": f"LLaVA: tiny CLIP tower + Llama decoder {hidden} wide, {layers} layers "
            "(random init), LoRA r=16 on the decoder, projector trained",
            "data": "synthetic shapes, 48 px images, colour questions; no loader workers",
            "ranks": RANKS,
            "threads_per_rank": THREADS_PER_RANK,
            "global_batch_size": global_batch_size,
            "micro_batch_size": micro_batch_size,
            "steps": steps,
            "warmup_steps_skipped": warmup,
            "repeats": repeats,
        },
        "ranks": ranks["ray"],
        "modes": modes,
        "runs": per_mode,
        "step_time_ratio": round(ratio, 4),
        "mean_step_time_ratio": round(mean_ratio, 4),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "commands": {k: " ".join(_short(a) for a in v) for k, v in argvs.items()},
        "command": f"python -m bench.ray_overhead --repeats {repeats} --steps {steps}",
    }


def _same_in_every_run(
    mode: str, before: list[dict[str, Any]] | None, now: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    if len(now) != RANKS:
        raise RuntimeError(f"{mode}: {len(now)} of {RANKS} ranks reported their threads: {now}")
    if before is not None and before != now:
        raise RuntimeError(f"{mode}: the ranks' threads changed between runs: {before} {now}")
    return now


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of each per-run number."""
    out: dict[str, Any] = {}
    for key in ("median_step_s", "mean_step_s", "first_step_s", "wall_s"):
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = round(statistics.median(values), 4) if values else None
        if key == "median_step_s" and values:
            out["median_step_s_spread"] = summarize(values)
    return out


def _short(arg: str) -> str:
    """Paths relative to the repository, for the docs."""
    try:
        return str(Path(arg).relative_to(REPO))
    except ValueError:
        return arg


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(run(repeats=args.repeats, steps=args.steps), indent=2))


if __name__ == "__main__":
    main()
