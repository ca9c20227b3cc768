"""Host memory at run time: each rank's resident memory in the metrics, and a loud early
warning before the kernel's OOM killer ends the run (seed 001: SIGKILL on a 64 GB machine).

- `HostMemoryGuard.sample()` (every `train.host_memory_every` steps, every rank; the numbers
  ride on the step's one all-reduce, `trainer.step_sync`): the RSS of each rank and of its
  data-loader workers, and the node's MemAvailable, for `metrics.jsonl`.
- A daemon thread on local rank 0 of each node samples MemAvailable every second from the
  start of setup (loading is when it matters most) and warns once when it falls under
  `WARN_BELOW` of the node's RAM, naming the likely cause and the fix.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.dist import DistEnv
    from vlaunch_core.host_memory import HostMemoryEstimate
    from vlaunch_core.plan import Plan

logger = logging.getLogger(__name__)

GIB = 1024**3
WARN_BELOW = 0.10
"""Warn when the node's available memory falls under this fraction of its RAM."""
SAMPLE_SECONDS = 1.0
WORKERS_EVERY_SECONDS = 30.0
"""Workers' unique memory is read from smaps (slow): at most this often."""


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Hand memory that the allocator kept after large frees back to the OS (glibc's
    `malloc_trim`): freed buffers above glibc's moving mmap threshold stay resident."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim(0)


def process_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def node_memory() -> tuple[int, int]:
    """(MemTotal, MemAvailable) of this node in bytes."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)


def workers_uss() -> int:
    """Unique memory of this process's children (data-loader workers share the parent's
    pages copy-on-write; their RSS would count those again)."""
    import psutil

    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += int(child.memory_full_info().uss)
        except (psutil.Error, OSError):
            continue
    return total


@dataclass
class Observation:
    """What the node looks like when its memory runs low."""

    phase: str
    total: int
    available: int
    ranks_rss: list[int]
    """RSS of the ranks on this node that this rank knows of (itself while loading)."""
    workers: int
    strategy: str
    low_memory_loading: bool
    host: HostMemoryEstimate | None


def likely_cause(o: Observation) -> tuple[str, str]:
    """(cause, fix) for a node that runs out of memory."""
    used = max(1, o.total - o.available)
    ranks = sum(o.ranks_rss)
    if o.phase == "loading" and not o.low_memory_loading:
        return (
            "every rank on this node loads a full copy of the model",
            "train.strategy=zero3 or fsdp (each rank then reads only its shard)",
        )
    if o.workers > 0.3 * used:
        return (
            f"the data-loader workers hold {o.workers / GIB:.1f} GiB",
            "a lower data.num_workers (or data.num_workers=auto, sized to the host)",
        )
    if o.strategy == "offload":
        return (
            "ZeRO offload keeps the optimizer states and fp32 master weights in host RAM",
            "train.strategy=zero3 (no offload) if the GPUs have room, or LoRA instead of full "
            "fine-tuning",
        )
    if ranks < 0.5 * used:
        return (
            f"other processes on this node use {(used - ranks - o.workers) / GIB:.1f} GiB",
            "free the node, or run on a node with more RAM",
        )
    return (
        f"the training processes ({ranks / GIB:.1f} GiB)",
        "see `vlaunch plan` for the host-memory parts and their fixes; more RAM or swap as a "
        "last resort",
    )


class HostMemoryGuard:
    """RSS per rank for the metrics, and the early warning (see the module docstring)."""

    def __init__(
        self,
        env: DistEnv,
        *,
        strategy: str,
        low_memory_loading: bool,
        host: HostMemoryEstimate | None = None,
        warn_below: float = WARN_BELOW,
    ) -> None:
        self.env = env
        self.strategy = strategy
        self.low_memory_loading = low_memory_loading
        self.host = host
        self.warn_below = warn_below
        self.phase = "loading"
        self.warned = threading.Event()
        self.last_ranks_rss: list[int] = []
        self._workers = 0
        self._workers_at = -WORKERS_EVERY_SECONDS
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_plan(cls, env: DistEnv, plan: Plan, strategy: str | None = None) -> HostMemoryGuard:
        host = plan.host_memory
        return cls(
            env,
            strategy=strategy or "ddp",
            low_memory_loading=host is not None and host.low_memory_loading,
            host=host,
        )

    def start(self) -> HostMemoryGuard:
        if self.env.local_rank == 0 and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="host-memory", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def sample(self) -> list[float]:
        """This rank's numbers now: [RSS, its loader workers' unique memory, the node's
        MemAvailable] (local; `summarise` combines every rank's)."""
        self.phase = "training"
        now = time.monotonic()
        if now - self._workers_at >= WORKERS_EVERY_SECONDS:
            self._workers, self._workers_at = workers_uss(), now
        _, available = node_memory()
        return [float(process_rss()), float(self._workers), float(available)]

    def summarise(self, table: list[list[float]]) -> dict[str, Any]:
        """The metrics of every rank's `sample` (rank order)."""
        self.last_ranks_rss = [int(r[0]) for r in table]
        return {
            "host_rss_gib": max(r[0] for r in table) / GIB,
            "host_rss_gib_per_rank": [round(r[0] / GIB, 4) for r in table],
            "host_workers_gib": sum(r[1] for r in table) / GIB,
            "host_available_gib": min(r[2] for r in table) / GIB,
        }

    def record(self) -> dict[str, Any]:
        """This step's host memory of every rank (collective: call on every rank). The loop
        does not call it: its samples ride on the step's one all-reduce (`trainer.step_sync`)."""
        import torch

        from trainer import dist

        mine = torch.tensor(self.sample(), dtype=torch.float64, device=self.env.device)
        rows = [mine]
        if dist.is_initialized():
            import torch.distributed as tdist

            rows = [torch.empty_like(mine) for _ in range(self.env.world_size)]
            tdist.all_gather(rows, mine)
        return self.summarise([[float(x) for x in r.tolist()] for r in rows])

    def check(self) -> bool:
        """Warn (once) if this node's available memory is under the threshold."""
        if self.warned.is_set():
            return False
        total, available = node_memory()
        if available >= self.warn_below * total:
            return False
        ranks = self.last_ranks_rss if self.phase == "training" else [process_rss()]
        obs = Observation(
            phase=self.phase,
            total=total,
            available=available,
            ranks_rss=ranks,
            workers=workers_uss(),
            strategy=self.strategy,
            low_memory_loading=self.low_memory_loading,
            host=self.host,
        )
        cause, fix = likely_cause(obs)
        predicted = ""
        if self.host is not None:
            predicted = (
                f" `vlaunch plan` predicted {self.host.total / GIB:.1f} GiB for this node "
                f"({self.host.node_ram / GIB:.1f} GiB RAM)."
            )
        logger.warning(
            "HOST MEMORY LOW during %s: %.1f GiB of %.1f GiB available on this node (under "
            "%.0f%%); the kernel will kill a rank (SIGKILL, exit -9) if it runs out. Likely "
            "cause: %s. Fix: %s.%s",
            self.phase,
            available / GIB,
            total / GIB,
            100 * self.warn_below,
            cause,
            fix,
            predicted,
        )
        self.warned.set()
        return True

    def _watch(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                if self.check():
                    return
            except Exception:  # a monitor must never take the run down
                logger.debug("host memory check failed", exc_info=True)
                return
