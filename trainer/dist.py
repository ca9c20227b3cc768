"""torch.distributed in one place: who am I, collectives the loop needs, and stall reports.

The loop runs the same in one process (world 1, no process group), under torchrun (we init
the process group from the environment) and in a Ray Train worker (Ray inits it).

Stalls: every rank records the last step it reached in the process group's store. When a
collective times out (`train.timeout_minutes`), the error names the ranks that were behind,
instead of gloo's "Connection closed by peer" or NCCL's watchdog dump.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def init_distributed(*, use_gpu: bool, timeout_minutes: float) -> DistEnv:
    """Join (or create, under torchrun) the default process group; pick this rank's device."""
    import torch
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_initialized() else _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if use_gpu:
        if not torch.cuda.is_available():
            from vlaunch_core.errors import UserError

            raise UserError(
                "the plan runs on GPUs but this worker sees no CUDA device",
                hint="use a GPU node, or --gpus 0 / resources.profile=cpu to train on CPU",
            )
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_gpu else "gloo",
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=device if use_gpu else None,
        )
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device)


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    import torch.distributed as dist

    if is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (float64; one collective)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(x) for x in t.tolist()]


class PeerFailed(UserError):
    """Raised on the ranks that did not meet the user error another rank met at the same
    collective point (`agree`); that rank's own error says what happened."""


def agree(error: UserError | None) -> None:
    """A collective point where a user error met by any rank stops every rank at once: the
    rank that met it raises it, the others `PeerFailed`; all of them carry `agreed = True`
    (every rank stops here: nothing is left waiting in a collective). One object gather."""
    import torch.distributed as dist

    messages: list[Any] = [error.render() if error is not None else None]
    if is_initialized():
        messages = [None] * dist.get_world_size()
        dist.all_gather_object(messages, error.render() if error is not None else None)
    failed = [(rank, m) for rank, m in enumerate(messages) if m is not None]
    if not failed:
        return
    if error is not None:
        error.agreed = True  # type: ignore[attr-defined]
        raise error
    rank, message = failed[0]
    peer = PeerFailed(f"rank {rank} stopped the run: {message.splitlines()[0]}")
    peer.agreed = True  # type: ignore[attr-defined]
    raise peer


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank `src`'s object on every rank."""
    import torch.distributed as dist

    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def destroy() -> None:
    """Shut the process group's backends down (`destroy_process_group`): NCCL's communicators
    are released here rather than by their destructors. Not after a failure: tearing down a
    broken NCCL group can hang. The group object itself may outlive this (see `exit_rank`)."""
    import torch.distributed as dist

    if is_initialized():
        dist.destroy_process_group()


def exit_rank(code: int) -> NoReturn:
    """End this rank's process now, without the interpreter's finalization.

    A rank's process group outlives `destroy`: DistributedDataParallel keeps references to it
    from C++ that neither deleting the model nor a collection releases (measured with torch
    2.14: gloo's three threads are still running after `destroy_process_group` once a DDP
    model was built, and not without one). Its real destruction then comes during the
    interpreter's finalization, where gloo's teardown can take the GIL of a dying interpreter
    and abort the process (SIGABRT, "terminate called without an active exception",
    pytorch/pytorch#179291): a finished rank exiting -6 and torchrun failing the whole run,
    seen twice in 2-rank CI runs. The run's files are closed and committed by then, so the
    logs and the standard streams are flushed and the process exits with `os._exit`."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def log_rank_zero(log: logging.Logger, rank: int, msg: str, *args: Any) -> None:
    if rank == 0:
        log.info(msg, *args)


# --------------------------------------------------------------------------- stalls


class CollectiveTimeout(RuntimeError):
    """A collective did not complete in `train.timeout_minutes`; names the ranks behind."""


_HEARTBEAT = "vlaunch/heartbeat/{rank}"


class Heartbeat:
    """The step each rank last started, kept in the process group's key-value store."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank = rank
        self.world_size = world_size
        self.host = socket.gethostname()
        self._store = _default_store() if world_size > 1 else None

    def beat(self, step: int) -> None:
        if self._store is not None:
            value = f"{step} {time.time():.0f} {self.host} {os.getpid()}"
            self._store.set(_HEARTBEAT.format(rank=self.rank), value)

    def laggards(self) -> list[str]:
        """One line per rank that is behind the most advanced one (or never reported)."""
        if self._store is None:
            return []
        seen: dict[int, tuple[int, float, str, str]] = {}
        for r in range(self.world_size):
            key = _HEARTBEAT.format(rank=r)
            try:
                if not self._store.check([key]):
                    continue
                step, stamp, host, pid = self._store.get(key).decode().split(" ", 3)
            except Exception:  # the store itself may be gone (rank 0 died)
                return []
            seen[r] = (int(step), float(stamp), host, pid)
        if not seen:
            return []
        top = max(s for s, *_ in seen.values())
        lines = []
        for r in range(self.world_size):
            if r not in seen:
                lines.append(f"rank {r} never reached the first step")
                continue
            step, stamp, host, pid = seen[r]
            if step < top:
                when = time.strftime("%H:%M:%S", time.localtime(stamp))
                lines.append(
                    f"rank {r} (host {host}, pid {pid}) stalled: it last started step {step} "
                    f"at {when}, others are at step {top}"
                )
        return lines


def _default_store() -> Any:
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # no store (not initialized by env/tcp): no stall report
        return None


def looks_like_timeout(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("timed out", "timeout", "connection closed by peer"))


def explain_timeout(
    exc: RuntimeError, *, heartbeat: Heartbeat, step: int, timeout_minutes: float
) -> CollectiveTimeout | None:
    """A `CollectiveTimeout` naming the stalled ranks, if `exc` is a collective timeout."""
    if not looks_like_timeout(exc) or heartbeat.world_size == 1:
        return None
    behind = heartbeat.laggards()
    who = "; ".join(behind) if behind else "no rank reported being behind (see their logs)"
    return CollectiveTimeout(
        f"rank {heartbeat.rank} waited for the other ranks during step {step} and gave up "
        f"after train.timeout_minutes={timeout_minutes:g}: {who}. A rank that stalls is "
        "usually stuck in data loading, out of host memory, or dead; raise "
        "train.timeout_minutes if steps are legitimately slow."
    )
