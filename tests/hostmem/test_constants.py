"""The CPU per-process baseline of the host-memory model, re-measured: a fresh Python that
imports what a training rank imports."""

from __future__ import annotations

import subprocess

from tests.trainer.helpers import PYTHON, child_env
from vlaunch_core.host_memory import CPU_RANK_BYTES

PROBE = """
import deepspeed, peft, psutil, torch, transformers
import trainer.loop, trainer.models.loading, trainer.strategies.zero
import transformers.models.llava.modeling_llava
print(psutil.Process().memory_info().rss)
"""


def test_cpu_rank_baseline_matches_a_fresh_process() -> None:
    proc = subprocess.run(
        [PYTHON, "-c", PROBE],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rss = int(proc.stdout.strip().splitlines()[-1])
    print(
        f"\nfresh rank process: {rss / 2**30:.2f} GiB RSS; model constant "
        f"{CPU_RANK_BYTES / 2**30:.2f} GiB"
    )
    # the constant adds the processor and the data index (~30 MiB) to the imports. The same
    # lock measured 0.78 to 1.00 GiB here (mapped libraries are resident or not depending on
    # what else runs): the window holds that spread and still catches a library imported
    # eagerly or a constant off by a quarter
    assert 0.75 * CPU_RANK_BYTES <= rss <= 1.25 * CPU_RANK_BYTES
