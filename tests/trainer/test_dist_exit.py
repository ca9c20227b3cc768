"""`trainer.dist.exit_rank`: a torchrun rank ends with its exit code and its output flushed,
without the interpreter's finalization (where a process group still alive can abort it)."""

from __future__ import annotations

import subprocess
import textwrap

from tests.trainer.helpers import PYTHON, REPO, child_env

EXITS = """
import atexit, logging, sys
from trainer.dist import exit_rank

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
atexit.register(lambda: print("finalized", flush=True))  # finalization: must not run
sys.stdout.write("buffered")  # a pipe: block-buffered, no newline
logging.getLogger("run").info("logged")
exit_rank(3)
"""

# The premise: once a DDP model was built, destroy() leaves the gloo group's threads running
# (torch keeps the group from C++), so without exit_rank it is torn down in finalization.
OUTLIVES = """
import os, tempfile
import torch, torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel
from trainer import dist

def gloo_threads():
    return sum("gloo" in open(f"/proc/self/task/{t}/comm").read()
               for t in os.listdir("/proc/self/task"))

store = os.path.join(tempfile.mkdtemp(), "store")
torch_dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
model = DistributedDataParallel(torch.nn.Linear(2, 2))
model(torch.ones(1, 2)).sum().backward()
del model
dist.destroy()
print(torch_dist.is_initialized(), gloo_threads(), flush=True)
dist.exit_rank(0)
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-c", textwrap.dedent(code)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_exit_rank_flushes_and_skips_finalization() -> None:
    proc = _run(EXITS)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered"  # flushed, and no atexit handler ran
    assert "logged" in proc.stderr


def test_a_destroyed_group_outlives_its_ddp_model_and_exit_rank_still_ends_cleanly() -> None:
    proc = _run(OUTLIVES)
    assert proc.returncode == 0, proc.stderr
    initialized, threads = proc.stdout.split()
    assert initialized == "False"
    assert int(threads) > 0, "gloo's threads ended with destroy(): exit_rank may be unneeded"
