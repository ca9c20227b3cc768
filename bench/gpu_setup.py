"""What the GPU benchmark's two trainers share: the configurations, the model as the trainer
builds it, the synthetic batch, the memory probe, and the result row.

`bench.gpu.measure` (vlaunch's loop) and `bench.hf_baseline.measure_baseline`
(`transformers.Trainer` + peft) both do: `prepare` (spec, plan, device memory probe, batch),
`build_model`, their own timed steps, then `finish` (FLOPs, tokens/s, MFU, peaks, the
memory estimator's error). Only the timed steps differ.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from bench.gpu_batches import BatchShape
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

LLM_FULL = {"preset": None, "vision_tower": "frozen", "projector": "full", "language_model": "full"}
LORA = {"preset": "lora_llm"}


@dataclass(frozen=True)
class GpuConfig:
    name: str
    model: str
    tiny_model: str
    tuning: dict[str, Any] = field(default_factory=lambda: dict(LORA))
    strategy: str = "ddp"
    micro_batch_size: int = 4
    seq_len: int = 1024
    gradient_checkpointing: bool = True
    baseline: bool = False
    """Also train it with transformers.Trainer + peft."""
    loss: str = "auto"
    """`train.loss`: `auto` is Liger's fused kernel where liger-kernel is installed on CUDA,
    else the chunked loss; `plain` takes the model's full logits."""


CONFIGS: tuple[GpuConfig, ...] = (
    GpuConfig(
        "qwen2-vl-2b lora", "random:qwen2-vl-2b", "tiny:qwen2_vl", micro_batch_size=8, baseline=True
    ),
    GpuConfig(
        "qwen2-vl-2b lora no-ckpt",
        "random:qwen2-vl-2b",
        "tiny:qwen2_vl",
        gradient_checkpointing=False,
    ),
    *(  # the loss's memory: the same step with full logits and with the chunked loss
        GpuConfig(
            f"qwen2-vl-2b lora loss={loss}",
            "random:qwen2-vl-2b",
            "tiny:qwen2_vl",
            micro_batch_size=8,
            loss=loss,
        )
        for loss in ("plain", "chunked")
    ),
    GpuConfig("qwen2-vl-2b full", "random:qwen2-vl-2b", "tiny:qwen2_vl", tuning=LLM_FULL),
    GpuConfig(
        "qwen2-vl-2b full zero2",
        "random:qwen2-vl-2b",
        "tiny:qwen2_vl",
        tuning=LLM_FULL,
        strategy="zero2",
    ),
    GpuConfig("llava-1.5-7b lora", "random:llava-1.5-7b", "tiny:llava", baseline=True),
    GpuConfig("llava-1.5-7b lora zero3", "random:llava-1.5-7b", "tiny:llava", strategy="zero3"),
    GpuConfig("qwen2-vl-7b lora", "random:qwen2-vl-7b", "tiny:qwen2_vl"),
)
TINY_MICRO, TINY_SEQ, TINY_IMAGE_PX = 2, 64, 32
IMAGE_PX = 448


def tiny_variant(cfg: GpuConfig) -> GpuConfig:
    """The configuration on the family's tiny model, with a CPU-sized batch."""
    return replace(cfg, model=cfg.tiny_model, micro_batch_size=TINY_MICRO, seq_len=TINY_SEQ)


def gpu_spec(cfg: GpuConfig, *, profile: str, precision: str, out_dir: str) -> JobSpec:
    """The job spec the planner sees for this configuration (one device, one micro batch)."""
    from vlaunch_core.spec_load import spec_from_dict

    raw = {
        "name": "bench-gpu",
        "model": {"name_or_path": cfg.model},
        "data": {"mixture": "synthetic", "max_length": cfg.seq_len},
        "tuning": cfg.tuning,
        "train": {
            "global_batch_size": cfg.micro_batch_size,
            "micro_batch_size": cfg.micro_batch_size,
            "grad_accum_steps": 1,
            "precision": precision,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "strategy": cfg.strategy,
            "loss": cfg.loss,
            "lr": 1e-4,
            "max_grad_norm": 1.0,
        },
        "resources": {"profile": profile, "gpus_per_node": 1},
        "output": {"dir": out_dir, "export": "none"},
    }
    return spec_from_dict(raw, check=False)  # the synthetic data is not a registered mixture


def build_model(
    spec: JobSpec, device: Any, precision: str
) -> tuple[Any, Any, tuple[type, ...], Any]:
    """(model, param_groups fn, layer classes, tuning report): the trainer's own
    `trainer.api.build_model`, for a model without a processor, on `device` when CUDA."""
    from trainer.api import build_model as build

    built = build(
        spec, precision, device=device if is_cuda(device) else None, require_processor=False
    )
    return built.model, built.param_groups, built.layer_classes, built.tuning_report


def is_cuda(device: Any) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


def sync(device: Any) -> None:
    """Wait for the device's queued work (CUDA), so that a timer sees it."""
    import torch

    if is_cuda(device):
        torch.cuda.synchronize(device)


class DeviceMemory:
    """Peak memory of this process on `device` (CUDA only; None elsewhere)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.cuda = is_cuda(device)
        self.device = device
        self.context: int | None = None
        if self.cuda:
            torch.cuda.init()
            torch.zeros(1, device=device)  # create the context before measuring it
            free, total = torch.cuda.mem_get_info(device)
            self.context = total - free - torch.cuda.memory_reserved(device)
            torch.cuda.reset_peak_memory_stats(device)

    def peaks(self) -> dict[str, int | None]:
        import torch

        if not self.cuda:
            return {"allocated": None, "reserved": None, "context": None}
        sync(self.device)
        return {
            "allocated": int(torch.cuda.max_memory_allocated(self.device)),
            "reserved": int(torch.cuda.max_memory_reserved(self.device)),
            "context": self.context,
        }


@dataclass
class Setup:
    """One configuration ready to be trained by either trainer."""

    cfg: GpuConfig
    spec: JobSpec
    plan: Plan
    device: torch.device
    profile: str
    memory: DeviceMemory
    config: dict[str, Any]
    batch: dict[str, torch.Tensor]
    shape: BatchShape

    @property
    def on_gpu(self) -> bool:
        return is_cuda(self.device)

    def row(self, trainer: str) -> dict[str, Any]:
        """The start of a result row: what was trained and what the planner predicts."""
        spec, cfg = self.spec, self.cfg
        return {
            "config": cfg.name,
            "trainer": trainer,
            "model": cfg.model,
            "tuning": spec.tuning.modes(),
            "strategy": cfg.strategy,
            "micro_batch_size": cfg.micro_batch_size,
            "seq_len": cfg.seq_len,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "precision": spec.train.precision,
            "predicted": prediction(self.plan),
        }

    def out_of_memory(self, row: dict[str, Any], error: BaseException) -> dict[str, Any]:
        row.update(
            error=f"out of memory: {str(error).splitlines()[0]}", measured=self.memory.peaks()
        )
        return row

    def finish(
        self, row: dict[str, Any], report: Any, times: list[float], warmup: int
    ) -> dict[str, Any]:
        """Add the timings of the steps after `warmup`, FLOPs, MFU and memory to `row`."""
        from bench.flops import micro_batch_flops

        plan, shape = self.plan, self.shape
        row["trainable_params"] = int(sum(report.trainable.values()))
        adapters = plan.memory.trainable_params if plan.memory is not None else None
        modes = self.spec.tuning.modes()
        from vlaunch_core.models.catalog import describe

        description = describe(self.spec.model)
        assert description is not None, "the training stack is installed: it describes"
        flops = micro_batch_flops(description, modes, shape, adapters)["total"]
        peak = _peak_flops(self.profile) if self.on_gpu else 0.0
        step = statistics.median(times[warmup:])
        row.update(
            step_time_s=round(step, 5),
            steps_timed=len(times) - warmup,
            tokens_per_s=round(shape.samples * shape.seq_len / step, 1),
            flops_per_step=flops,
            tflops_per_s=round(flops / step / 1e12, 3),
            peak_tflops=peak / 1e12 if peak else None,
            mfu=round(flops / step / peak, 4) if peak else None,
            measured=self.memory.peaks(),
        )
        row["memory_error"] = memory_error(row["predicted"], row["measured"])
        return row


def model_config_of(name: str) -> dict[str, Any]:
    """The model's full config (transformers' defaults filled in), as a dict."""
    from trainer.models.describe import model_config
    from vlaunch_core.spec import ModelSpec

    config: dict[str, Any] = model_config(ModelSpec(name_or_path=name)).to_dict()
    return config


def prepare(cfg: GpuConfig, device: torch.device, *, image_px: int, out_dir: str) -> Setup:
    """Spec and plan (bf16 on a GPU, fp32 on CPU), the memory probe, one synthetic batch."""
    from bench.gpu_batches import synthetic_batch
    from vlaunch_core.plan import make_plan
    from vlaunch_core.profiles import detect_local_profile

    on_gpu = is_cuda(device)
    profile = detect_local_profile() if on_gpu else "cpu"
    precision = "bf16" if on_gpu else "fp32"
    spec = gpu_spec(cfg, profile=profile, precision=precision, out_dir=out_dir)
    config = model_config_of(cfg.model)
    batch, shape = synthetic_batch(config, cfg.micro_batch_size, cfg.seq_len, image_px=image_px)
    return Setup(
        cfg, spec, make_plan(spec), device, profile, DeviceMemory(device), config, batch, shape
    )


def _peak_flops(profile: str) -> float:
    from vlaunch_core.profiles import get_profile

    return float(get_profile(profile).peak_tflops) * 1e12


def prediction(plan: Plan) -> dict[str, Any] | None:
    if plan.memory is None:
        return None
    return {"parts": dict(plan.memory.parts), "total": int(plan.memory.total)}


def memory_error(
    predicted: dict[str, Any] | None, measured: Mapping[str, int | None]
) -> float | None:
    """(predicted - measured) / measured, measured = reserved peak + CUDA context."""
    if predicted is None or measured.get("reserved") is None:
        return None
    actual = int(measured["reserved"] or 0) + int(measured.get("context") or 0)
    return round((predicted["total"] - actual) / actual, 4)
