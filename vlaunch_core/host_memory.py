"""Host (CPU) memory per node, predicted without loading anything: will the node's RAM hold
the run, and if not, which setting fixes it.

A node runs `ranks` training processes (one per device), their data-loader workers, and
Ray's own processes. Its peak is the larger of two phases:

- loading: every rank's Python + torch baseline, plus what it holds while the model is
  built. Without low-memory loading each rank materialises the whole model on the CPU in the
  load dtype (trained weights as fp32 masters) before moving or sharding it; with it (FSDP,
  ZeRO-3, offload on several ranks: `trainer/models/deferred.py`) a rank holds its shard of
  the frozen weights, the trained weights in full (fp32), and one weight in flight.
- training: the baselines, the data-loader workers (per worker: a base plus the batches it
  has in flight; `data.worker_memory_mib` overrides the estimate), pinned copies of
  prefetched batches (GPU), ZeRO offload's optimizer states and fp32 masters (pinned), and on
  the `cpu` profile the device estimate itself (device memory *is* host memory there, so its
  weights, gradients, optimizer and activations are counted once, here), plus one more
  step of activations that glibc keeps resident after freeing it (`allocator_slack`).

The per-process baselines are constants: measured on this project's CPU image, stated for
GPUs (see the constants). docs/host-memory.md explains each part and the measurements.
Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vlaunch_core.estimator import (
    DTYPE_BYTES,
    MemoryEstimate,
    ParamLike,
    Shape,
    TrainingSetup,
    numel,
    trainable_counts,
    trained_in_full,
)

if TYPE_CHECKING:
    from vlaunch_core.profiles import World
    from vlaunch_core.spec import JobSpec

GIB = 1024**3
MIB = 1024**2

CPU_RANK_BYTES = int(0.9 * GIB)
"""Resident memory of a CPU training rank before its model: Python with torch 2.14.1 (the
CUDA build, which also runs on CPU: torch alone is 0.69 GiB resident), torchvision,
transformers 5.25, peft and deepspeed imported (bitsandbytes only for QLoRA) measured 0.78 to
1.00 GiB here (the same lock, under different load), plus the processor and the data index
(tests/hostmem re-measures it)."""
GPU_RANK_BYTES = int(3.0 * GIB)
"""Resident memory of a GPU training rank before its model (stated, not measured here): the
CUDA runtime, cuBLAS/cuDNN/NCCL and torch's CUDA kernels are mapped into host memory and
become partly resident once used (2-4 GiB per process is typical with CUDA 12 and lazy module
loading), on top of the CPU baseline."""
WORKER_BASE_BYTES = int(0.25 * GIB)
"""Unique memory of one data-loader worker before its batches: a fresh worker measured
16 MiB here (it shares the parent's pages), but over a long run it copies parts of the parent's
Python heap on write and decodes full-size images; 0.25 GiB is a round upper figure."""
RAY_HEAD_BYTES = int(1.6 * GIB)
"""Ray on the head node, measured here (Ray 2.60, proportional set size): GCS, raylet,
dashboard, agents and monitors 0.45 GiB, Ray Train's controller and helper actors 0.8 GiB,
the driver (`vlaunch run`) 0.27 GiB."""
RAY_NODE_BYTES = int(0.25 * GIB)
"""Ray on every other node (raylet, agents, log monitor): 0.23 GiB measured here."""
HOST_HEADROOM = 0.10
"""Fraction of a node's RAM left to the OS, the page cache and other processes."""
STAGING_BYTES = 64 * MIB
"""Largest buffer low-memory loading reads through (trainer/models/safetensors_index.py)."""
DEFAULT_PREFETCH = 2
MAX_AUTO_WORKERS = 4
LOW_MEMORY_STRATEGIES = ("fsdp", "zero3", "offload")


@dataclass(frozen=True)
class LoaderChoice:
    """Data-loader workers and prefetch per rank, and why."""

    num_workers: int
    prefetch_factor: int
    auto: bool
    reason: str


@dataclass(frozen=True)
class HostMemoryEstimate:
    parts: dict[str, int]
    """Bytes per node of each part (both phases; see `loading` / `training`)."""
    loading: int
    """Bytes per node while the model is loaded."""
    training: int
    """Bytes per node while training."""
    node_ram: int
    ranks_per_node: int
    loader: LoaderChoice
    worker_bytes: int
    """Estimated bytes of one data-loader worker."""
    low_memory_loading: bool
    ray: bool
    advice: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return max(self.loading, self.training)

    @property
    def usable(self) -> int:
        return int(self.node_ram * (1.0 - HOST_HEADROOM))

    @property
    def fits(self) -> bool:
        return self.total <= self.usable

    @property
    def peak_phase(self) -> str:
        return "loading" if self.loading > self.training else "training"

    def to_json(self) -> dict[str, Any]:
        return {
            "parts_bytes": dict(self.parts),
            "loading_bytes": self.loading,
            "training_bytes": self.training,
            "total_bytes": self.total,
            "peak_phase": self.peak_phase,
            "node_ram_bytes": self.node_ram,
            "usable_bytes": self.usable,
            "headroom": HOST_HEADROOM,
            "fits": self.fits,
            "ranks_per_node": self.ranks_per_node,
            "num_workers": self.loader.num_workers,
            "prefetch_factor": self.loader.prefetch_factor,
            "workers_auto": self.loader.auto,
            "workers_reason": self.loader.reason,
            "worker_bytes": self.worker_bytes,
            "low_memory_loading": self.low_memory_loading,
            "ray": self.ray,
            "advice": list(self.advice),
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HostMemoryEstimate:
        """The estimate `to_json` wrote (a saved plan)."""
        return cls(
            parts={k: int(v) for k, v in d["parts_bytes"].items()},
            loading=int(d["loading_bytes"]),
            training=int(d["training_bytes"]),
            node_ram=int(d["node_ram_bytes"]),
            ranks_per_node=int(d["ranks_per_node"]),
            loader=LoaderChoice(
                num_workers=int(d["num_workers"]),
                prefetch_factor=int(d["prefetch_factor"]),
                auto=bool(d["workers_auto"]),
                reason=str(d["workers_reason"]),
            ),
            worker_bytes=int(d["worker_bytes"]),
            low_memory_loading=bool(d["low_memory_loading"]),
            ray=bool(d["ray"]),
            advice=tuple(d.get("advice", ())),
            notes=tuple(d.get("notes", ())),
        )


def rank_baseline(is_gpu: bool) -> int:
    return GPU_RANK_BYTES if is_gpu else CPU_RANK_BYTES


def uses_low_memory_loading(spec: JobSpec, world_size: int) -> bool:
    """Whether the trainer loads this job's weights shard by shard (see module docstring)."""
    modes = spec.tuning.modes()
    return (
        spec.train.strategy in LOW_MEMORY_STRATEGIES
        and world_size > 1
        and "qlora" not in modes.values()
        and not (spec.tuning.lora.use_dora and "lora" in modes.values())
        and not spec.model.name_or_path.startswith("random:")
    )


def loading_bytes_per_rank(
    table: Sequence[ParamLike], setup: TrainingSetup, *, low_memory: bool
) -> int:
    """What one rank holds on the host while its model is built.

    Normal path: the whole model in the load dtype, trained weights as fp32 masters (then
    moved to the GPU, or kept: on the `cpu` profile it is the device copy). Low-memory
    loading: on a GPU only adapters, one weight in flight and the read buffer; on the `cpu`
    profile also this rank's shard of every weight (its device memory).
    """
    cb = DTYPE_BYTES[setup.precision]
    total = sum(numel(p.shape) for p in table)
    largest = max((numel(p.shape) for p in table), default=0)
    trained = sum(numel(p.shape) for p in table if trained_in_full(p, setup))
    adapters = sum(
        n
        for m, n in trainable_counts(table, setup).items()
        if setup.modes.get(m) in ("lora", "qlora")
    )
    if "qlora" in setup.modes.values() and setup.is_gpu:
        # bitsandbytes quantizes while transformers streams the weights to the GPU
        return int(largest * cb + STAGING_BYTES)
    if not low_memory:
        return int((total - trained) * cb + (trained + adapters) * 4)
    in_flight = adapters * 4 + largest * cb + STAGING_BYTES
    if setup.is_gpu:
        return int(in_flight)
    world = max(1, setup.world_size)
    return int(((total - trained) * cb + trained * 4) / world + in_flight)


def offload_bytes_per_rank(
    table: Sequence[ParamLike], setup: TrainingSetup, *, params_too: bool
) -> int:
    """ZeRO offload on the host: Adam moments + fp32 master weights + fp32 gradient partitions
    of the trained parameters (and the parameter partitions themselves when `params_too`)."""
    world = max(1, setup.world_size)
    n_train = sum(trainable_counts(table, setup).values())
    per_param = 8 + 4 + 4 if setup.optimizer == "adamw" else 4 + 4
    out = n_train * per_param / world
    if params_too:
        out += sum(numel(p.shape) for p in table) * DTYPE_BYTES[setup.precision] / world
    return int(out)


def batch_bytes(spec: JobSpec, shape: Shape, micro_batch: int, supports_video: bool) -> int:
    """Bytes of one collated micro batch: token tensors (int64 ids, mask, labels) and pixel
    values (fp32, one image, or one video of `data.video.num_frames` frames)."""
    side = round((shape.vision_tokens_per_image or 0) ** 0.5) * 14 or 448
    frames = spec.data.video.num_frames if supports_video else 1
    per_sample = spec.data.max_length * 8 * 3 + frames * 3 * side * side * 4
    return int(micro_batch * per_sample)


def worker_bytes(spec: JobSpec, batch: int, prefetch: int) -> int:
    """One data-loader worker: `data.worker_memory_mib`, or a base plus its batches in flight
    (the batch it builds and `prefetch` finished ones in shared memory)."""
    if spec.data.worker_memory_mib != "auto":
        return int(spec.data.worker_memory_mib) * MIB
    return WORKER_BASE_BYTES + (prefetch + 1) * batch


def choose_loader(
    spec: JobSpec, *, cores: int, ranks_per_node: int, budget: int, batch: int, accum: int = 1
) -> tuple[LoaderChoice, int]:
    """Workers and prefetch per rank (`auto`: the cores a rank may use beyond its own, at
    most 4, and no more than the node's RAM budget holds), and the bytes of one worker.

    The trainer takes an optimizer step's `accum` micro batches at once (it needs the step's
    target tokens before the first backward), so an `auto` prefetch holds a whole step across
    the workers where RAM allows: with fewer batches in flight, the workers only start on
    the rest of the next step when it begins, and every step waits for them."""
    d = spec.data
    prefetch = DEFAULT_PREFETCH if d.prefetch_factor == "auto" else int(d.prefetch_factor)
    if d.num_workers != "auto":
        n = int(d.num_workers)
        pf = whole_step_prefetch(prefetch, n, accum) if d.prefetch_factor == "auto" else prefetch
        reason = "data.num_workers" + (_holds(pf, accum) if pf != prefetch else "")
        return LoaderChoice(n, pf, False, reason), worker_bytes(spec, batch, pf)
    by_cores = max(0, min(MAX_AUTO_WORKERS, cores // max(1, ranks_per_node) - 1))
    candidates = [prefetch] if d.prefetch_factor != "auto" else [DEFAULT_PREFETCH, 1]
    for pf in candidates:
        each = worker_bytes(spec, batch, pf)
        by_ram = max(0, budget // max(1, ranks_per_node * each))
        n = int(min(by_cores, by_ram))
        if n == by_cores or pf == candidates[-1]:
            limit = "cores" if n == by_cores else "host RAM"
            reason = (
                f"auto: {cores} cores / {ranks_per_node} rank(s) allow {by_cores}, "
                f"{budget / GIB:.1f} GiB of RAM left allows {by_ram} at "
                f"{each / GIB:.2f} GiB each (limited by {limit})"
            )
            whole = whole_step_prefetch(pf, n, accum) if d.prefetch_factor == "auto" else pf
            if whole != pf:
                bigger = worker_bytes(spec, batch, whole)
                if budget // max(1, ranks_per_node * bigger) >= n:
                    return LoaderChoice(n, whole, True, reason + _holds(whole, accum)), bigger
            return LoaderChoice(n, pf, True, reason), each
    raise AssertionError("unreachable")


def whole_step_prefetch(prefetch: int, workers: int, accum: int) -> int:
    """The prefetch (at least `prefetch`) at which `workers` hold `accum` micro batches (an
    optimizer step's) in flight."""
    return max(prefetch, -(-accum // workers)) if workers > 0 else prefetch


def _holds(prefetch: int, accum: int) -> str:
    return f"; prefetch {prefetch} holds a step's {accum} micro batches"


def estimate_host_memory(
    spec: JobSpec,
    world: World,
    table: Sequence[ParamLike],
    shape: Shape,
    setup: TrainingSetup,
    device: MemoryEstimate | None,
    *,
    supports_video: bool = False,
    low_memory: bool | None = None,
    node_ram: int | None = None,
    cores: int | None = None,
    ray: bool = True,
    head_node: bool = True,
    accum: int = 1,
) -> HostMemoryEstimate:
    """Host memory of one node of `world` (the head node unless `head_node=False`);
    `accum`: the micro batches of an optimizer step (for the loader's prefetch)."""
    prof = world.profile
    ranks = world.gpus_per_node
    is_gpu = prof.is_gpu
    low = uses_low_memory_loading(spec, setup.world_size) if low_memory is None else low_memory
    ram = node_ram if node_ram is not None else prof.host_memory_bytes
    cores = cores if cores is not None else prof.cpus_per_node
    strategy = setup.strategy
    notes: list[str] = []

    parts: dict[str, int] = {"processes": ranks * rank_baseline(is_gpu)}
    parts["ray"] = (RAY_HEAD_BYTES if head_node else RAY_NODE_BYTES) if ray else 0
    parts["model_loading"] = ranks * loading_bytes_per_rank(table, setup, low_memory=low)
    state = slack = 0
    if not is_gpu and device is not None:
        # the cpu profile: the device estimate lives in host RAM (its `overhead` part is the
        # process baseline, counted above)
        state = sum(v for k, v in device.parts.items() if k != "overhead")
        # glibc keeps a step's freed activation memory resident for the next one: a CPU
        # rank's RSS holds about one more step of activations than the estimate's peak
        # (measured by tests/hostmem/test_low_memory_loading.py: docs/host-memory.md)
        slack = device.parts.get("activations", 0)
    parts["training_state"] = ranks * state
    parts["allocator_slack"] = ranks * slack
    offload = 0
    if strategy == "offload":
        offload = offload_bytes_per_rank(table, setup, params_too=is_gpu)
        notes.append("ZeRO offload keeps optimizer states and fp32 master weights in host RAM")
    parts["optimizer_offload"] = ranks * offload
    batch = batch_bytes(spec, shape, setup.micro_batch_size, supports_video)
    fixed = (
        parts["processes"]
        + parts["ray"]
        + parts["training_state"]
        + parts["allocator_slack"]
        + offload * ranks
    )
    budget = max(0, int(ram * (1.0 - HOST_HEADROOM)) - fixed)
    loader, each = choose_loader(
        spec, cores=cores, ranks_per_node=ranks, budget=budget, batch=batch, accum=accum
    )
    parts["pinned_batches"] = (
        ranks * (loader.num_workers * loader.prefetch_factor + 1) * batch if is_gpu else 0
    )
    parts["data_workers"] = ranks * loader.num_workers * each
    base = parts["processes"] + parts["ray"]
    loading = base + parts["model_loading"]
    training = (
        base
        + parts["training_state"]
        + parts["allocator_slack"]
        + parts["optimizer_offload"]
        + parts["pinned_batches"]
        + parts["data_workers"]
    )
    if not low and strategy in LOW_MEMORY_STRATEGIES and setup.world_size > 1:
        notes.append("low-memory loading does not apply (QLoRA, DoRA or random weights)")
    est = HostMemoryEstimate(
        parts=parts,
        loading=loading,
        training=training,
        node_ram=ram,
        ranks_per_node=ranks,
        loader=loader,
        worker_bytes=each,
        low_memory_loading=low,
        ray=ray,
        notes=tuple(notes),
    )
    if est.fits:
        return est
    return replace(est, advice=tuple(_advice(spec, est)))


def _advice(spec: JobSpec, est: HostMemoryEstimate) -> list[str]:
    """Settings that bring the node under its RAM, most effective first."""
    over = est.total - est.usable
    p = est.parts
    tips: list[tuple[int, str]] = []
    fixed = est.training - p["data_workers"] - p["pinned_batches"]
    if est.peak_phase == "training" and p["data_workers"] > 0 and fixed <= est.usable:
        # fewer workers alone bring the node under its RAM
        fit = (est.usable - fixed) // max(1, est.ranks_per_node * est.worker_bytes)
        fit = int(min(fit, est.loader.num_workers - 1))
        tips.append(
            (
                p["data_workers"],
                f"data.num_workers={fit} (now {est.loader.num_workers} per rank at "
                f"{est.worker_bytes / GIB:.2f} GiB each; `auto` sizes them to the host)",
            )
        )
    if est.peak_phase == "loading" and not est.low_memory_loading:
        if spec.train.strategy in ("ddp", "zero2"):
            tips.append(
                (
                    p["model_loading"],
                    "train.strategy=zero3 or fsdp: low-memory loading, each rank reads only "
                    "its shard of the weights instead of a full copy",
                )
            )
        else:
            tips.append(
                (
                    p["model_loading"],
                    "plain LoRA instead of QLoRA/DoRA, so that each rank reads only its shard",
                )
            )
    if p["optimizer_offload"] > 0:
        tips.append(
            (
                p["optimizer_offload"],
                "train.strategy=zero3 (offload off: optimizer states stay on the devices), or "
                "LoRA instead of full fine-tuning",
            )
        )
    if p["training_state"] > 0 and est.peak_phase == "training":
        tips.append((p["training_state"], "fewer workers per node (resources.gpus_per_node)"))
    tips.sort(key=lambda t: -t[0])
    out = [t for _, t in tips]
    out.append(
        f"more RAM or swap, as a last resort ({over / GIB:.1f} GiB over; swap makes a "
        "run slow, not safe)"
    )
    return out
