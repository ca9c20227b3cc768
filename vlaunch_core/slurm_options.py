"""Slurm options of a job spec (`slurm:` section). The `vlaunch slurm` flags are generated
from these fields, so each option is defined once, here."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from vlaunch_core.section import Section

_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$|^\d+$")


class SlurmOptions(Section):
    partition: str | None = None
    """Slurm partition (`#SBATCH --partition`)."""
    account: str | None = None
    """Slurm account to charge (`#SBATCH --account`)."""
    qos: str | None = None
    """Quality of service (`#SBATCH --qos`)."""
    time: str | None = None
    """Wall-time limit, e.g. `04:00:00` or `1-00:00:00` (`#SBATCH --time`)."""
    constraint: str | None = None
    """Node features required (`#SBATCH --constraint`)."""
    exclusive: bool = False
    """Ask for whole nodes (`#SBATCH --exclusive`); then `--mem=0` (all of each node's
    memory) unless `mem` is set. Worth it when the job uses every GPU of its nodes."""
    variant: str | None = None
    """A VILA script name (`srun_lora_llm`, `srun_fft_grouped`, ...): selects the tuning preset."""
    container_image: str | None = None
    """Run inside this container image (pyxis/enroot `--container-image`). It is imported once
    per node and job: every step names the same container (`--container-name`)."""
    container_mounts: list[str] = Field(default_factory=list)
    """Container mounts `SRC:DST` (pyxis `--container-mounts`)."""
    cpus_per_task: int | None = Field(default=None, ge=1)
    """CPUs per node (one task per node; `#SBATCH --cpus-per-task`). Default: `cpus_per_gpu`
    x GPUs per node (per worker process on the `cpu` profile), at most the smallest node of
    the partition (asked with `sinfo` on submission; 90% of the profile's node in a
    dry-run)."""
    cpus_per_gpu: int = Field(default=8, ge=1)
    """CPUs per GPU when `cpus_per_task` is not set (8 GPUs: 64 CPUs)."""
    mem: str | None = None
    """Memory per node, Slurm syntax (`512G`; `0` = all of it). Default: `mem_per_gpu_gib` x
    GPUs per node (4G per worker process on the `cpu` profile), at least the plan's
    host-memory prediction + 10%, at most the smallest node of the partition (90% of the
    profile's node in a dry-run); with `exclusive`, `0`."""
    mem_per_gpu_gib: int = Field(default=100, ge=1)
    """GiB of memory per GPU when `mem` is not set (8 GPUs: 800G)."""
    max_restarts: int = Field(default=3, ge=0, le=100)
    """How many times a preempted or timed-out job comes back by itself."""
    requeue: Literal["requeue", "chain"] = "requeue"
    """How the job comes back: `scontrol requeue` itself, or submit a dependent `afterany` job."""
    signal_seconds: int = Field(default=300, ge=10)
    """Seconds before the time limit at which Slurm signals the job to checkpoint and exit."""
    log_dir: str | None = None
    """Where `%x-%j.out` logs go (default: `<output.dir>/<name>/slurm`)."""
    setup: list[str] = Field(default_factory=list)
    """Shell lines run on every node before Ray starts (e.g. `module load cuda`); they are
    shell code, copied into the script as written."""
    ray_port: int | None = Field(default=None, ge=1024, le=65000)
    """Port of the Ray head (GCS); the next port is its client server. Default: derived from
    the job id, so that jobs sharing a node do not collide."""
    ray_timeout: int = Field(default=300, ge=10)
    """Seconds the job waits for every node to join the Ray cluster before it fails."""

    @field_validator("time")
    @classmethod
    def _check_time(cls, v: str | None) -> str | None:
        if v is not None and not _TIME.match(v):
            raise ValueError("not a Slurm time: use MM, HH:MM:SS or D-HH:MM:SS (e.g. 04:00:00)")
        return v


def time_limit_seconds(value: str) -> int:
    """Seconds in a Slurm time (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`)."""
    days, _, rest = value.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # D-HH[:MM[:SS]]
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]
