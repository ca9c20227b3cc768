"""`make bench` = `python -m bench.run_cpu`: the CPU benchmarks, their JSON and their tables.

Runs CLI latency, packing and grouping, the data pipeline, the data sources, the Ray overhead
benchmark, the loss memory and the side-by-side run against TRL and transformers' Trainer
(about 9 minutes on a 2-core machine before the last two; those add about 5), writes
`bench/results/cpu.json` and regenerates the tables of `docs/benchmarks.md` between their
marker comments; the GPU table comes from
`bench/results/gpu.json` when a GPU run wrote one. The machine's load average is recorded
before and after each benchmark: run it on an otherwise idle machine.

    python -m bench.run_cpu                    # everything
    python -m bench.run_cpu --only packing     # some benchmarks (others keep their last result)
    python -m bench.run_cpu --doc-only         # re-render docs/benchmarks.md from the JSON files
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    cli_latency,
    data_pipeline,
    data_sources,
    loss_memory,
    packing,
    peers,
    ray_overhead,
    report,
)
from bench.common import REPO, machine

logger = logging.getLogger(__name__)

RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"

BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "cli_latency": lambda: cli_latency.run(repeats=7),
    "packing": lambda: packing.run(train_steps=8, train_warmup=2, train_repeats=3),
    "data_pipeline": data_pipeline.run,
    "data_sources": data_sources.run,
    "ray_overhead": lambda: ray_overhead.run(repeats=5),
    "loss_memory": lambda: loss_memory.run(repeats=1),
    "peers": lambda: peers.run(repeats=3, steps=12),
    "peers_micro16": lambda: peers.run(repeats=3, steps=20, micro=16),
}


def run_all(names: list[str], previous: dict[str, Any] | None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": machine(),
        "benchmarks": dict((previous or {}).get("benchmarks", {})),
    }
    for name in names:
        print(f"== {name}", flush=True)
        before = os.getloadavg()
        t0 = time.perf_counter()
        try:
            result = BENCHMARKS[name]()
        except Exception as e:  # one failure must not lose the others' numbers
            traceback.print_exc()
            result = {"name": name, "error": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["load_average"] = {"before": before, "after": os.getloadavg()}
        result["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        results["benchmarks"][name] = result
        print(f"   {result['seconds']} s", flush=True)
    return results


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_cpu", description=__doc__)
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), default=None)
    parser.add_argument("--doc-only", action="store_true", help="only re-render the page")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    cpu_json = args.results / "cpu.json"
    previous = read_json(cpu_json)
    if args.doc_only:
        if previous is None:
            parser.error(f"{cpu_json} does not exist: run the benchmarks first")
        results = previous
    else:
        t0 = time.perf_counter()
        results = run_all(args.only or list(BENCHMARKS), previous)
        results["total_seconds"] = round(time.perf_counter() - t0, 1)
        write_json(cpu_json, results)
        print(f"wrote {cpu_json} ({results['total_seconds']} s)")
    report.update_page(args.doc, report.blocks(results, read_json(args.results / "gpu.json")))
    print(f"updated {args.doc}")
    return 1 if any("error" in r for r in results["benchmarks"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
