"""What a job asks Slurm for on each node: CPUs (`--cpus-per-task`, one task per node),
memory (`--mem`) and whole nodes (`--exclusive`), from what the spec asks for.

Defaults are sized for the devices the job uses, not for the profile's whole node:
`slurm.cpus_per_gpu` CPUs and `slurm.mem_per_gpu_gib` GiB per GPU (per worker process on the
`cpu` profile), memory at least the plan's host-memory prediction plus 10%, and with
`--exclusive` all of the node's memory (`--mem=0`). They never exceed a node: 90% of the
hardware profile's node when nothing else is known (`--dry-run`), and the smallest node of
the partition when the cluster can be asked (a submission reads `sinfo -h -N -o`, machine
output). A value the user set is never changed: when it exceeds the partition's nodes, the
submission is refused with the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

#: Share of the profile's node a default may take (the rest: the OS, slurmd, page cache).
PROFILE_SHARE = 0.9
#: Host memory asked for beyond the plan's prediction of it.
HOST_MEMORY_MARGIN = 0.10
#: Memory per worker process on the `cpu` profile, in GiB.
CPU_WORKER_MEMORY_GIB = 4
#: `sinfo` fields: partition (the default one ends in `*`), node, CPUs, memory in MB.
SINFO_FORMAT = "%P|%N|%c|%m"


@dataclass(frozen=True)
class NodeLimits:
    """The smallest node of a partition, as Slurm describes it."""

    partition: str
    cpus: int
    memory_mb: int
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeRequest:
    """What each node of the job asks for, and why (one line per adjusted default)."""

    cpus: int
    mem: str | None
    exclusive: bool
    notes: tuple[str, ...] = field(default=())


def _mb(gib: float) -> int:
    return int(gib * 1024)


def _format_mem(mb: int) -> str:
    return f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"


def node_request(spec: JobSpec, plan: Plan, node: NodeLimits | None = None) -> NodeRequest:
    """CPUs, memory and exclusivity per node for `spec` on the plan's world; `node` is the
    partition's smallest node when the cluster was asked."""
    s, world = spec.slurm, plan.world
    prof = world.profile
    devices = world.gpus_per_node  # GPUs, or worker processes on the `cpu` profile
    cpu_cap = max(1, math.floor(prof.cpus_per_node * PROFILE_SHARE))
    mem_cap = max(1, _mb(math.floor(prof.host_memory_gib * PROFILE_SHARE)))
    where = f"the {prof.name} profile's node (90%)"
    if node is not None:
        cpu_cap, mem_cap = node.cpus, node.memory_mb
        where = f"the smallest node of partition {node.partition}"
    notes: list[str] = []

    if s.cpus_per_task is not None:
        cpus = s.cpus_per_task
        if node is not None and cpus > node.cpus:
            raise _too_big("slurm.cpus_per_task", f"{cpus} CPUs", f"{node.cpus} CPUs", node)
    else:
        cpus = s.cpus_per_gpu * devices
        if cpus > cpu_cap:
            notes.append(f"--cpus-per-task={cpu_cap}: {cpus} would exceed {where}")
            cpus = cpu_cap

    mem: str | None
    if s.mem is not None:
        mem = s.mem
        wanted = _parse_mem_mb(s.mem)
        if node is not None and wanted is not None and wanted > node.memory_mb:
            raise _too_big("slurm.mem", s.mem, f"{node.memory_mb}M", node)
    elif s.exclusive:
        mem = "0"  # the whole node's memory: the job has the node anyway
    else:
        per = s.mem_per_gpu_gib if prof.is_gpu else CPU_WORKER_MEMORY_GIB
        mb = _mb(per * devices)
        host = plan.host_memory
        if host is not None:
            needed = math.ceil(host.total * (1 + HOST_MEMORY_MARGIN) / 1024**2)
            if needed > mb:
                notes.append(
                    f"--mem raised to the plan's host-memory prediction plus 10% "
                    f"({_format_mem(needed)})"
                )
                mb = needed
        if mb > mem_cap:
            notes.append(f"--mem={_format_mem(mem_cap)}: {_format_mem(mb)} would exceed {where}")
            mb = mem_cap
        mem = _format_mem(mb)
    return NodeRequest(cpus=cpus, mem=mem, exclusive=s.exclusive, notes=tuple(notes))


def _too_big(key: str, asked: str, has: str, node: NodeLimits) -> UserError:
    return UserError(
        f"{key} asks for {asked} per node, but the smallest node of partition "
        f"'{node.partition}' has {has} ({', '.join(node.nodes[:4])}"
        f"{', ...' if len(node.nodes) > 4 else ''})",
        hint=f"lower {key} (or unset it: the default fits the node), or pick a partition with "
        "larger nodes (--partition)",
    )


_UNITS = {"": 1, "M": 1, "G": 1024, "T": 1024**2, "K": 1 / 1024}


def _parse_mem_mb(value: str) -> int | None:
    """Megabytes of a Slurm memory size (`64G`, `4096`, `1T`); None for `0` (all of it) or
    what cannot be read (Slurm judges it)."""
    text = value.strip().upper().removesuffix("B")
    number, unit = text, ""
    if text and text[-1] in _UNITS:
        number, unit = text[:-1], text[-1]
    try:
        amount = float(number)
    except ValueError:
        return None
    return None if amount == 0 else int(amount * _UNITS[unit])


def parse_sinfo(text: str, partition: str | None) -> NodeLimits | None:
    """The smallest node of `partition` (None: the default partition, marked `*`) from
    `sinfo -h -N -o '%P|%N|%c|%m'`; None when no line is for it. Raises ValueError on a line
    that is not in that format."""
    wanted = {p for p in (partition or "").split(",") if p}
    cpus: list[int] = []
    memory: list[int] = []
    names: list[str] = []
    chosen: set[str] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|")
        if len(parts) != 4:
            raise ValueError(f"unexpected sinfo line: {line!r}")
        part, name, ncpus, mem = parts
        default = part.endswith("*")
        part = part.rstrip("*")
        if (wanted and part not in wanted) or (not wanted and not default):
            continue
        chosen.add(part)
        cpus.append(int(ncpus))
        memory.append(int(mem.rstrip("+")))
        names.append(name)
    if not cpus:
        return None
    return NodeLimits(",".join(sorted(chosen)), min(cpus), min(memory), tuple(sorted(names)))
