"""GPU benchmark: real-size VLMs with random weights trained by the plain loop (no Ray).

    python -m bench.gpu                          # on a GPU machine: bench/results/gpu.json
    python -m bench.gpu --device cpu --tiny      # the same code on CPU with tiny models

For each configuration (model, tuning, strategy, micro batch, sequence length, gradient
checkpointing): build the model, the strategy and the step with the trainer's public API
(`trainer.api`: `build_model`, `build_strategy`, the strategy's `prepare`, `train_step`, what
`trainer.loop` runs) on a synthetic full-length batch (`bench.gpu_batches`)
for `warmup + steps` steps. Reported: median step time, tokens/s, MFU (FLOPs counted as
`bench.flops` says, against the profile's dense bf16 peak), peak memory
(`torch.cuda.max_memory_allocated` / `max_memory_reserved`), and the memory estimator's
prediction (`vlaunch_core.plan.make_plan(spec).memory`) for the same spec.

Memory comparison: the estimator predicts what the device must hold, CUDA context included
(its `overhead` part), so it is compared with the reserved peak plus the CUDA context measured
before the model is built; the allocated peak is reported next to it.

With `baseline: true` a configuration is also trained by a plain `transformers.Trainer`
on the same PEFT-wrapped model and batch (`bench.hf_baseline`). On CUDA every run happens in a
fresh subprocess, so peaks and DeepSpeed state never leak from one configuration to the next.
The configurations, the model building, the batch and the result row are shared with the
baseline (`bench.gpu_setup`); this module holds the loop's timed steps and the driver.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from bench.common import REPO, bench_env, machine
from bench.gpu_setup import (
    CONFIGS,
    IMAGE_PX,
    TINY_IMAGE_PX,
    GpuConfig,
    build_model,
    prepare,
    sync,
    tiny_variant,
)


def measure(
    cfg: GpuConfig, *, device: str, steps: int, warmup: int, image_px: int
) -> dict[str, Any]:
    """Train `cfg` with the loop's optimizer step; timings, memory, prediction."""
    import torch

    from trainer.api import build_loss, build_strategy, train_step
    from trainer.dist import init_distributed
    from trainer.loss import target_tokens

    env = init_distributed(use_gpu=device == "cuda", timeout_minutes=30)
    with tempfile.TemporaryDirectory(prefix="vlaunch-bench-gpu-") as tmp:
        setup = prepare(cfg, env.device, image_px=image_px, out_dir=tmp)
        row = setup.row("vlaunch loop")
        plan = setup.plan
        try:
            model, groups, layer_classes, report = build_model(
                setup.spec, env.device, plan.precision
            )
            strategy = build_strategy(setup.spec, env, plan)
            strategy.prepare(model, groups, layer_classes=layer_classes)
            loss = build_loss(setup.spec, strategy)  # `train.loss`, as the loop builds it
            row["loss"] = loss.kind  # recorded before the steps: an out-of-memory row has it too
            tokens = float(target_tokens(setup.batch["labels"]))
            times = []
            for _ in range(warmup + steps):
                t0 = time.perf_counter()
                out = train_step(strategy, [setup.batch], tokens, loss)  # the loop's own step
                sync(env.device)
                times.append(time.perf_counter() - t0)
            row["last_loss"] = float(out.loss_sum) / max(tokens, 1.0)
        except torch.cuda.OutOfMemoryError as e:
            return setup.out_of_memory(row, e)
        return setup.finish(row, report, times, warmup)


# --------------------------------------------------------------------------- driver


def run_one(
    cfg: GpuConfig, *, device: str, tiny: bool, steps: int, warmup: int, baseline: bool
) -> dict[str, Any]:
    """One configuration (its tiny variant with `tiny`) by one trainer, in this process."""
    cfg = tiny_variant(cfg) if tiny else cfg
    image_px = TINY_IMAGE_PX if tiny else IMAGE_PX
    if baseline:
        from bench.hf_baseline import measure_baseline

        return measure_baseline(cfg, device=device, steps=steps, warmup=warmup, image_px=image_px)
    return measure(cfg, device=device, steps=steps, warmup=warmup, image_px=image_px)


def _in_subprocess(cfg_name: str, args: list[str], baseline: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        argv = [sys.executable, "-m", "bench.gpu", "--configs", cfg_name, "--child", str(out)]
        argv += [*args, *(["--baseline-only"] if baseline else [])]
        proc = subprocess.run(
            argv, cwd=REPO, env=bench_env(), capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not out.is_file():
            return {"config": cfg_name, "error": (proc.stdout + proc.stderr)[-2000:]}
        return cast(dict[str, Any], json.loads(out.read_text()))


def run(
    *,
    device: str = "cuda",
    tiny: bool = False,
    names: list[str] | None = None,
    steps: int = 10,
    warmup: int = 3,
    isolate: bool | None = None,
) -> dict[str, Any]:
    """Every selected configuration (and its baseline), one result row each."""
    configs = [c for c in CONFIGS if names is None or c.name in names]
    if names is not None and len(configs) != len(names):
        known = ", ".join(c.name for c in CONFIGS)
        raise SystemExit(f"unknown configuration in {names}; known: {known}")
    isolate = device == "cuda" if isolate is None else isolate
    child_args = ["--device", device, "--steps", str(steps), "--warmup", str(warmup)]
    child_args += ["--tiny"] if tiny else []
    rows = []
    for cfg in configs:
        for baseline in (False, True) if cfg.baseline else (False,):
            if isolate:
                rows.append(_in_subprocess(cfg.name, child_args, baseline))
            else:
                rows.append(
                    run_one(
                        cfg, device=device, tiny=tiny, steps=steps, warmup=warmup, baseline=baseline
                    )
                )
    return {
        "name": "gpu",
        "machine": machine(),
        "device": _device_name(device),
        "tiny": tiny,
        "steps": steps,
        "warmup_steps_skipped": warmup,
        "rows": rows,
        "command": "python -m bench.gpu" + (f" --device {device} --tiny" if tiny else ""),
    }


def _device_name(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return str(torch.cuda.get_device_name(0))
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny models and batches (CPU test)")
    parser.add_argument("--configs", help="comma-separated configuration names (default: all)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    parser.add_argument("--list", action="store_true", help="list the configurations")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.list:
        for c in CONFIGS:
            print(json.dumps(asdict(c)))
        return 0
    names = args.configs.split(",") if args.configs else None
    if args.child is not None:  # one run, in a fresh process
        cfg = next(c for c in CONFIGS if c.name == args.configs)
        row = run_one(
            cfg,
            device=args.device,
            tiny=args.tiny,
            steps=args.steps,
            warmup=args.warmup,
            baseline=args.baseline_only,
        )
        args.child.write_text(json.dumps(row))
        return 0
    result = run(
        device=args.device, tiny=args.tiny, names=names, steps=args.steps, warmup=args.warmup
    )
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(main())
