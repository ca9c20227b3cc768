"""Hardware profiles: what one node offers (GPU memory, bf16, GPUs per node, host RAM).

Built-in profiles cover common GPUs; users add their own in YAML (`resources.profiles`):

    my-a6000:
      description: RTX A6000 workstation
      gpu_memory_mib: 49140
      bf16: true
      gpus_per_node: 4
      host_memory_gib: 256
      cpus_per_node: 64
      peak_tflops: 155

`auto` detects local GPUs with nvidia-smi (no torch import) or falls back to `cpu`, whose
memory and cores are read from this machine.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, ValidationError

from vlaunch_core.errors import ProblemReport, UserError, did_you_mean
from vlaunch_core.section import Section

if TYPE_CHECKING:
    from vlaunch_core.spec import JobSpec

MIB = 1024**2
GIB = 1024**3


class ProfileError(UserError):
    """A hardware profile is unknown or malformed."""


class HardwareProfile(Section):
    name: str = ""
    """Profile name."""
    description: str = ""
    """What hardware this is."""
    gpu_memory_mib: int = Field(ge=1)
    """Memory of one device in MiB, as nvidia-smi reports it (CPU: host RAM per node)."""
    bf16: bool = True
    """Whether the device computes in bfloat16."""
    gpus_per_node: int = Field(default=8, ge=1)
    """Default devices per node."""
    host_memory_gib: float = Field(default=512, gt=0)
    """Host RAM per node in GiB."""
    cpus_per_node: int = Field(default=64, ge=1)
    """CPU cores per node."""
    peak_tflops: float = Field(default=0.0, ge=0)
    """Dense bf16 (or fp16) tensor TFLOP/s per device, vendor figure, for MFU."""
    is_gpu: bool = True
    """False for the `cpu` profile."""

    @property
    def device_memory_bytes(self) -> int:
        return self.gpu_memory_mib * MIB

    @property
    def host_memory_bytes(self) -> int:
        return int(self.host_memory_gib * GIB)


def _gpu(
    name: str, desc: str, mib: int, bf16: bool, gpn: int, host: float, cpus: int, tflops: float
) -> HardwareProfile:
    return HardwareProfile(
        name=name,
        description=desc,
        gpu_memory_mib=mib,
        bf16=bf16,
        gpus_per_node=gpn,
        host_memory_gib=host,
        cpus_per_node=cpus,
        peak_tflops=tflops,
    )


#: Built-in profiles. Memory is what nvidia-smi reports; TFLOP/s are dense bf16 (fp16 for
#: V100) tensor-core figures from the vendors' data sheets, used only for MFU.
BUILTIN: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        _gpu("rtx3090ti", "GeForce RTX 3090 Ti 24 GB workstation", 24564, True, 2, 64, 16, 80),
        _gpu("rtx4090", "GeForce RTX 4090 24 GB workstation", 24564, True, 1, 128, 24, 165),
        _gpu("a100-40gb", "A100 40 GB (DGX A100 node)", 40960, True, 8, 1024, 128, 312),
        _gpu("a100-80gb", "A100 80 GB (DGX A100 node)", 81920, True, 8, 2048, 128, 312),
        _gpu("h100-80gb", "H100 SXM 80 GB (DGX H100 node)", 81559, True, 8, 2048, 112, 989),
        _gpu("h200", "H200 SXM 141 GB (HGX H200 node)", 143771, True, 8, 2048, 112, 989),
        _gpu("l40s", "L40S 48 GB (4-GPU server)", 46068, True, 4, 512, 64, 362),
        _gpu("v100-32gb", "V100 32 GB (no bf16)", 32768, False, 8, 512, 80, 125),
    )
}


def _local_cpu_profile() -> HardwareProfile:
    total = _meminfo_bytes("MemTotal") or 16 * GIB
    return HardwareProfile(
        name="cpu",
        description="this machine's CPUs (gloo backend)",
        gpu_memory_mib=total // MIB,
        bf16=True,
        gpus_per_node=1,
        host_memory_gib=total / GIB,
        cpus_per_node=os.cpu_count() or 1,
        peak_tflops=0.0,
        is_gpu=False,
    )


def _meminfo_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def available_host_memory() -> int | None:
    """Bytes of host memory available now (MemAvailable), or None off Linux."""
    return _meminfo_bytes("MemAvailable")


def load_profile_file(path: str) -> dict[str, HardwareProfile]:
    from vlaunch_core.spec_errors import pydantic_problems
    from vlaunch_core.yamlfile import read_yaml

    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile file maps names to profiles")
    out: dict[str, HardwareProfile] = {}
    problems = []
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise ProfileError(f"{path}: profile '{name}' must be a mapping")
        try:
            out[str(name)] = HardwareProfile.model_validate({**body, "name": str(name)})
        except ValidationError as e:
            for p in pydantic_problems(e, HardwareProfile):
                problems.append(type(p)(f"{name}.{p.where}", p.message, p.hint))
    if problems:
        raise ProblemReport(title="invalid hardware profile", problems=problems, source=path)
    return out


def all_profiles(extra_files: list[str] | tuple[str, ...] = ()) -> dict[str, HardwareProfile]:
    profiles = dict(BUILTIN)
    profiles["cpu"] = _local_cpu_profile()
    for f in extra_files:
        profiles.update(load_profile_file(f))
    return profiles


def known_profile_names(extra_files: list[str] | tuple[str, ...] = ()) -> list[str]:
    try:
        return sorted(all_profiles(extra_files))
    except UserError:
        return sorted([*BUILTIN, "cpu"])


def nvidia_smi(*fields: str) -> list[list[str]]:
    """Rows of `nvidia-smi --query-gpu=<fields>` (no torch import); [] without NVIDIA GPUs.

    Respects CUDA_VISIBLE_DEVICES by count (the first visible GPUs)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[c.strip() for c in ln.split(",")] for ln in out.splitlines() if ln.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        rows = rows[: len([v for v in visible.split(",") if v.strip()])]
    return rows


@functools.lru_cache(maxsize=1)
def detect_local_profile() -> str:
    """The built-in profile matching the local GPUs (nvidia-smi), else `cpu`."""
    rows = nvidia_smi("name", "memory.total")
    if not rows:
        return "cpu"
    name, mem = rows[0][0], rows[0][1] if len(rows[0]) > 1 else "0"
    key = name.lower().replace("nvidia", "").replace("geforce", "").strip()
    table = {
        "rtx 3090 ti": "rtx3090ti",
        "rtx 4090": "rtx4090",
        "h200": "h200",
        "l40s": "l40s",
        "h100": "h100-80gb",
        "v100": "v100-32gb",
    }
    for needle, prof in table.items():
        if needle in key:
            return prof
    if "a100" in key:
        return "a100-80gb" if int(float(mem or 0)) > 50000 else "a100-40gb"
    return "cpu"


def get_profile(name: str, extra_files: list[str] | tuple[str, ...] = ()) -> HardwareProfile:
    if name == "auto":
        name = detect_local_profile()
    profiles = all_profiles(extra_files)
    if name not in profiles:
        raise ProfileError(
            f"unknown hardware profile '{name}'.{did_you_mean(name, profiles)}",
            hint=f"use one of: {', '.join(sorted(profiles))}, or add one in resources.profiles",
        )
    return profiles[name]


@dataclass(frozen=True)
class World:
    """Where a job runs: nodes x devices per node, on one hardware profile."""

    profile: HardwareProfile
    nodes: int
    gpus_per_node: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


def resolve_world(spec: JobSpec) -> World:
    prof = get_profile(spec.resources.profile, spec.resources.profiles)
    gpn = spec.resources.gpus_per_node or prof.gpus_per_node
    return World(profile=prof, nodes=spec.resources.nodes, gpus_per_node=gpn)
