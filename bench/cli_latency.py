"""CLI latency: wall time of whole `vlaunch` processes (what a user waits for).

Targets (issue 9): `--help` < 0.5 s, `plan` < 1 s, `slurm --dry-run` < 1 s, `k8s --dry-run` < 2 s.
"""

from __future__ import annotations

import functools
from typing import Any

from bench.common import median_time, run_cli

CASES: list[tuple[str, list[str], float]] = [
    ("vlaunch --help", ["--help"], 0.5),
    ("vlaunch plan", ["plan", "examples/demo.yaml", "--json"], 1.0),
    ("vlaunch slurm --dry-run", ["slurm", "examples/demo.yaml", "--nodes", "2", "--dry-run"], 1.0),
    (
        "vlaunch k8s --dry-run",
        [
            "k8s",
            "examples/demo.yaml",
            "--nodes",
            "2",
            "--image",
            "registry.example.com/ml/vlaunch:0.1.0-cpu",
            "--dry-run",
        ],
        2.0,
    ),
]


def run(repeats: int = 7) -> dict[str, Any]:
    """Median wall time of each command over `repeats` runs after one untimed run (which warms
    the page cache and .pyc files)."""
    rows: list[dict[str, Any]] = []
    for label, argv, target in CASES:
        try:
            stats = median_time(functools.partial(run_cli, argv), repeats=repeats, warmup=1)
        except RuntimeError as e:
            rows.append({"command": label, "error": str(e).splitlines()[0]})
            continue
        row: dict[str, Any] = {"command": label, "argv": argv, "target_s": target, **stats}
        row["meets_target"] = stats["median"] < target
        rows.append(row)
    return {
        "name": "cli_latency",
        "rows": rows,
        "command": "python -m bench.cli_latency",
    }


def main() -> None:
    import json

    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
