"""How often a finished torchrun rank aborts at exit, with and without `exit_rank`.

`python -m bench.rank_exit --runs 120`: the same 2-rank gloo job (a DDP model, three AdamW
steps, `destroy_process_group`) launched by torchrun `runs` times ending normally (the
interpreter's finalization) and `runs` times through `trainer.dist.exit_rank`, alternating.
Prints one JSON object: per mode, the runs, how many failed, and their ranks' exit codes
(-6 is SIGABRT). Not part of `make bench`: it is a reliability check, about 6 s per run.
Why (trainer.dist.exit_rank): torch keeps the DDP model's gloo group alive after
`destroy_process_group`, and its teardown during finalization can abort the process.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import BIN, REPO, bench_env

MODES = ("finalization", "exit_rank")

RANK = """
import sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

dist.init_process_group("gloo")
layers = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
model = DistributedDataParallel(layers)
optimizer = torch.optim.AdamW(model.parameters())
for _ in range(3):
    model(torch.randn(8, 64)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
dist.destroy_process_group()
if sys.argv[1] == "exit_rank":
    from trainer.dist import exit_rank

    exit_rank(0)
"""

EXITCODE = re.compile(r"^\s*exitcode\s+:\s*(-?\d+)", re.M)  # torchrun's summary, per rank


def launch(script: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(script), mode],
        env=bench_env(threads=1, PYTHONPATH=str(REPO)),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def run(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "rank.py"
        script.write_text(RANK)
        failed: dict[str, Counter[int]] = {mode: Counter() for mode in MODES}
        failures = dict.fromkeys(MODES, 0)
        for _ in range(runs):
            for mode in MODES:
                proc = launch(script, mode)
                if proc.returncode != 0:
                    failures[mode] += 1
                    failed[mode].update(int(c) for c in EXITCODE.findall(proc.stderr))
    return {
        "command": f"python -m bench.rank_exit --runs {runs}",
        **{
            mode: {"runs": runs, "failed": failures[mode], "rank_exit_codes": dict(failed[mode])}
            for mode in MODES
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rank_exit", description=__doc__)
    parser.add_argument("--runs", type=int, default=120, help="launches per mode")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
