"""CLI latency: wall time of whole `vlaunch` processes (what a user waits for).

Targets (issue 9): `--help` < 0.5 s, `plan` < 1 s, `slurm --dry-run` < 1 s, `k8s --dry-run` < 2 s.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import run_cli, summarize

CASES: list[tuple[str, list[str], float]] = [
    ("vlaunch --help", ["--help"], 0.5),
    ("vlaunch plan", ["plan", "examples/demo.yaml", "--json"], 1.0),
    ("vlaunch slurm --dry-run", ["slurm", "examples/demo.yaml", "--nodes", "2", "--dry-run"], 1.0),
    ("vlaunch k8s --dry-run", ["k8s", "examples/demo.yaml", "--nodes", "2", "--dry-run"], 2.0),
]


def run(repeats: int = 7) -> dict[str, Any]:
    rows = []
    for label, argv, target in CASES:
        try:
            run_cli(argv)  # warm the page cache and .pyc files
        except RuntimeError as e:
            rows.append({"command": label, "error": str(e).splitlines()[0]})
            continue
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run_cli(argv)
            samples.append(time.perf_counter() - t0)
        stats = summarize(samples)
        rows.append(
            {
                "command": label,
                "argv": argv,
                "target_s": target,
                **stats,
                "meets_target": stats["median"] < target,
            }
        )
    return {
        "name": "cli_latency",
        "rows": rows,
        "command": "python -m bench.cli_latency (via make bench)",
    }


def main() -> None:
    import json

    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
