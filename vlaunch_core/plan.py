"""`make_plan(spec)`: the batch plan and the memory prediction of a job, in one object.

The launch pipeline calls this once, before anything is queued; `vlaunch plan` prints the
same. The plan is then handed to the workers (in memory under Ray, as `plan.json` next to
the job spec on Slurm and Kubernetes): `plan_for_world` keeps it unless the world size
really changed (resume on another device count), and only then plans again, so the global
batch stays the same.
Nothing here imports torch: model shapes come from the model's description
(`vlaunch_core.models.catalog`, built from the model itself on the meta device).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError
from vlaunch_core.estimator import MemoryEstimate, Shape, TrainingSetup, estimate
from vlaunch_core.host_memory import HostMemoryEstimate, estimate_host_memory
from vlaunch_core.planner import BatchPlan, resolve_batch
from vlaunch_core.profiles import World, resolve_world

if TYPE_CHECKING:
    from vlaunch_core.models.description import ModelDescription
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)


DOES_NOT_FIT = "does not fit"
"""The words every note about a prediction that exceeds the hardware contains."""


class PlanDoesNotFit(UserError):
    """The plan's memory prediction exceeds the device or the host memory (exit 1)."""

    exit_code = 1


@dataclass
class Plan:
    name: str
    world: World
    batch: BatchPlan
    precision: str
    memory: MemoryEstimate | None
    family: str | None
    notes: list[str] = field(default_factory=list)
    host_memory: HostMemoryEstimate | None = None
    """Host RAM of the (head) node, by part (vlaunch_core/host_memory.py)."""

    @property
    def fits(self) -> bool:
        device = self.memory is None or self.memory.fits
        return device and (self.host_memory is None or self.host_memory.fits)

    def fit_error(self) -> PlanDoesNotFit | None:
        """Why this plan does not fit, as the one error that `vlaunch plan` and every launch
        report (exit 1); None when it fits."""
        if self.fits:
            return None
        w = self.world
        reasons = [n for n in self.notes if DOES_NOT_FIT in n] or [
            f"{DOES_NOT_FIT}: the memory prediction exceeds the hardware"
        ]
        return PlanDoesNotFit(
            f"the plan for '{self.name}' on {w.nodes} node(s) x {w.gpus_per_node} x "
            f"{w.profile.name}: {'; '.join(reasons)}",
            hint="change the spec as suggested; `vlaunch plan JOB.yaml` shows the prediction "
            "by part (nothing was started or submitted)",
        )

    def require_fit(self) -> None:
        """The fit gate: raise `PlanDoesNotFit` unless the plan fits."""
        error = self.fit_error()
        if error is not None:
            raise error

    def to_json(self) -> dict[str, Any]:
        b = self.batch
        return {
            "format": PLAN_FORMAT,
            "name": self.name,
            "global_batch_size": b.global_batch_size,
            "micro_batch_size": b.micro_batch_size,
            "grad_accum_steps": b.grad_accum_steps,
            "world_size": b.world_size,
            "nodes": self.world.nodes,
            "gpus_per_node": self.world.gpus_per_node,
            "profile": self.world.profile.name,
            "requested_global_batch_size": b.requested_global_batch_size,
            "precision": self.precision,
            "family": self.family,
            "fits": self.fits,
            "memory": self.memory.to_json() if self.memory else None,
            "host_memory": self.host_memory.to_json() if self.host_memory else None,
            "notes": [*b.notes, *self.notes],
            "batch_notes": list(b.notes),
            "plan_notes": list(self.notes),
            "hardware_profile": self.world.profile.model_dump(mode="json"),
        }

    def to_json_text(self) -> str:
        """A plan file's text (`plan.json`): `to_json` as `vlaunch plan --json` prints it."""
        return json.dumps(self.to_json(), indent=2, default=str) + "\n"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        """The plan `to_json` wrote (`plan.json` of a launch or a run)."""
        from vlaunch_core.profiles import HardwareProfile

        if d.get("format") != PLAN_FORMAT:
            raise UserError(
                f"a plan of format {d.get('format')!r}; this vlaunch reads format {PLAN_FORMAT}",
                hint="launch the job again with this vlaunch version",
            )
        batch = BatchPlan(
            global_batch_size=int(d["global_batch_size"]),
            micro_batch_size=int(d["micro_batch_size"]),
            grad_accum_steps=int(d["grad_accum_steps"]),
            world_size=int(d["world_size"]),
            requested_global_batch_size=int(d["requested_global_batch_size"]),
            notes=tuple(d.get("batch_notes", ())),
        )
        world = World(
            HardwareProfile.model_validate(d["hardware_profile"]),
            int(d["nodes"]),
            int(d["gpus_per_node"]),
        )
        return cls(
            name=str(d["name"]),
            world=world,
            batch=batch,
            precision=str(d["precision"]),
            memory=MemoryEstimate.from_json(d["memory"]) if d.get("memory") else None,
            family=d.get("family"),
            notes=list(d.get("plan_notes", ())),
            host_memory=(
                HostMemoryEstimate.from_json(d["host_memory"]) if d.get("host_memory") else None
            ),
        )


PLAN_FORMAT = 1
"""Version of `Plan.to_json` (plan.json files handed from a launch to its workers)."""


def read_plan(path: str | os.PathLike[str]) -> Plan:
    """A saved `plan.json`; a user error naming the file when it is missing or damaged."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return Plan.from_json(data)
    except FileNotFoundError:
        raise UserError(f"{p}: no such plan file", hint="launch the job again") from None
    except UserError as e:
        raise UserError(f"{p}: {e.message}", hint=e.hint) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise UserError(
            f"{p}: not a valid plan ({type(e).__name__}: {e})",
            hint="launch the job again to write a new plan",
        ) from None


def plan_for_world(plan: Plan, spec: JobSpec, world_size: int) -> Plan:
    """The plan to train with on `world_size` ranks: `plan` itself when that is its world
    size, else a new plan for that world (same global batch; logged)."""
    if plan.batch.world_size == world_size:
        return plan
    new = make_plan(spec, world_size=world_size)
    logger.warning(
        "re-planned for a world of %d ranks (the saved plan was for %d): micro batch %d x "
        "accumulation %d (was %d x %d), global batch %d",
        world_size,
        plan.batch.world_size,
        new.batch.micro_batch_size,
        new.batch.grad_accum_steps,
        plan.batch.micro_batch_size,
        plan.batch.grad_accum_steps,
        new.batch.global_batch_size,
    )
    return new


def resolve_precision(spec: JobSpec, world: World) -> str:
    p = spec.train.precision
    if p != "auto":
        return p
    if not world.profile.is_gpu:
        return "fp32"
    return "bf16" if world.profile.bf16 else "fp16"


def model_shape(d: ModelDescription) -> Shape:
    """The sizes the activation model needs, from the model's description."""
    return Shape(
        hidden=d.text.hidden,
        layers=d.text.layers,
        intermediate=d.text.intermediate,
        heads=d.text.heads,
        kv_heads=d.text.kv_heads,
        vocab=d.text.vocab,
        vision_hidden=d.vision.hidden,
        vision_layers=d.vision.layers,
        vision_intermediate=d.vision.intermediate,
        vision_tokens_per_image=d.vision.tokens_per_image,
    )


@dataclass(frozen=True)
class ModelFacts:
    """What the estimator needs to know about the spec's model, read without torch."""

    family: str
    description: ModelDescription
    table: list[Any]
    shape: Shape
    lora_targets: str | list[str] | None
    vision_lora_targets: str | list[str] | None
    unused_prefixes: tuple[str, ...]
    module_prefixes: tuple[str, ...]


def model_facts(spec: JobSpec) -> ModelFacts:
    """Parameter table, sizes, LoRA targets and module prefixes of the spec's model (from
    its description: `vlaunch_core.models.catalog`). A user error when it cannot be known."""
    from vlaunch_core.models.catalog import describe

    d = describe(spec.model)
    if d is None:
        raise UserError(
            f"the shapes of model '{spec.model.name_or_path}' cannot be known here (a hub id "
            "that is not downloaded, or no training stack installed)",
            hint="download its config (`huggingface-cli download ID config.json`) or install "
            "the training stack; or set train.micro_batch_size to plan without a prediction",
        )
    lora = spec.tuning.lora
    return ModelFacts(
        family=d.model_type,
        description=d,
        table=list(d.params),
        shape=model_shape(d),
        lora_targets=lora.target_modules
        if lora.target_modules is not None
        else d.lora_targets("language_model"),
        vision_lora_targets=lora.vision_target_modules
        if lora.vision_target_modules is not None
        else d.lora_targets("vision_tower"),
        unused_prefixes=d.unused_prefixes,
        module_prefixes=d.prefixes("vision_tower") + d.prefixes("projector"),
    )


def training_setup(
    spec: JobSpec, facts: ModelFacts, world: World, precision: str, micro_batch_size: int
) -> TrainingSetup:
    tr = spec.train
    return TrainingSetup(
        modes=spec.tuning.modes(),
        precision=precision,
        strategy=tr.strategy,
        world_size=world.world_size,
        micro_batch_size=micro_batch_size,
        seq_len=spec.data.max_length,
        gradient_checkpointing=tr.gradient_checkpointing,
        is_gpu=world.profile.is_gpu,
        optimizer=tr.optimizer,
        lora_r=spec.tuning.lora.r,
        use_dora=spec.tuning.lora.use_dora,
        lora_targets=facts.lora_targets,
        vision_lora_targets=facts.vision_lora_targets,
        unused_prefixes=facts.unused_prefixes,
        module_prefixes=facts.module_prefixes,
        loss="plain" if tr.loss == "plain" else "chunked",
        deterministic_accum=-(-tr.global_batch_size // (micro_batch_size * world.world_size))
        if tr.deterministic
        else 0,
    )


def make_plan(
    spec: JobSpec,
    *,
    world_size: int | None = None,
    estimate_memory: bool = True,
) -> Plan:
    """Plan `spec`; `world_size` overrides the spec's resources (resume on other hardware)."""
    world = resolve_world(spec)
    if world_size is not None and world_size != world.world_size:
        if world_size % world.nodes:
            world = World(world.profile, 1, world_size)
        else:
            world = World(world.profile, world.nodes, world_size // world.nodes)
    precision = resolve_precision(spec, world)
    tr = spec.train
    micro = None if tr.micro_batch_size == "auto" else int(tr.micro_batch_size)
    accum = None if tr.grad_accum_steps == "auto" else int(tr.grad_accum_steps)

    notes: list[str] = []
    facts: ModelFacts | None = None
    if estimate_memory:
        try:
            facts = model_facts(spec)
        except UserError as e:
            if micro is None and accum is None:
                raise UserError(
                    f"cannot choose the micro batch automatically: {e.message}",
                    hint="set train.micro_batch_size (or fix the model reference)",
                ) from None
            notes.append(f"no memory prediction: {e.message}")

    capacity = world.profile.device_memory_bytes
    if not world.profile.is_gpu:
        capacity //= max(1, world.gpus_per_node)

    def memory_for(m: int) -> MemoryEstimate:
        assert facts is not None
        setup = training_setup(spec, facts, world, precision, m)
        return estimate(
            facts.table,
            facts.shape,
            setup,
            capacity=capacity,
            headroom=spec.resources.memory_headroom,
        )

    batch = resolve_batch(
        tr.global_batch_size,
        world.world_size,
        micro=micro,
        accum=accum,
        rounding=tr.batch_rounding,
        fits=(lambda m: memory_for(m).fits) if facts is not None else None,
    )
    memory = memory_for(batch.micro_batch_size) if facts is not None else None
    if memory is not None and not memory.fits:
        notes.append(_does_not_fit_advice(spec, memory))
    host = None
    if facts is not None:
        host = estimate_host_memory(
            spec,
            world,
            facts.table,
            facts.shape,
            training_setup(spec, facts, world, precision, batch.micro_batch_size),
            memory,
            supports_video=facts.description.video,
            accum=batch.grad_accum_steps,
        )
        if not host.fits:
            notes.append(_host_does_not_fit(host))
    return Plan(
        name=spec.name,
        world=world,
        batch=batch,
        precision=precision,
        memory=memory,
        family=facts.family if facts is not None else None,
        notes=notes,
        host_memory=host,
    )


def _host_does_not_fit(host: HostMemoryEstimate) -> str:
    gib = 1024**3
    return (
        f"host memory {DOES_NOT_FIT}: {host.total / gib:.1f} GiB predicted per node (peak while "
        f"{host.peak_phase}) > {host.usable / gib:.1f} GiB usable of {host.node_ram / gib:.1f} "
        "GiB RAM; try " + "; or ".join(host.advice)
    )


def _does_not_fit_advice(spec: JobSpec, memory: MemoryEstimate) -> str:
    gib = 1024**3
    over = (memory.total - memory.usable) / gib
    biggest = max(memory.parts, key=lambda k: memory.parts[k])
    tips = []
    if not spec.train.gradient_checkpointing:
        tips.append("train.gradient_checkpointing=true")
    if spec.train.strategy in ("ddp", "zero2") and biggest in ("weights", "optimizer", "gradients"):
        tips.append("train.strategy=zero3 (or fsdp) to shard weights and optimizer states")
    if spec.train.strategy == "zero3" and biggest == "optimizer":
        tips.append("train.strategy=offload to keep optimizer states in host RAM")
    if spec.tuning.modes()["language_model"] == "full":
        tips.append("tuning.preset=lora_llm (LoRA instead of full fine-tuning)")
    if biggest == "activations":
        tips.append(f"a shorter data.max_length (now {spec.data.max_length})")
    tips.append("more GPUs or a larger GPU (--profile)")
    return (
        f"{DOES_NOT_FIT}: {memory.total / gib:.1f} GiB predicted > {memory.usable / gib:.1f} "
        f"GiB usable ({over:.1f} GiB over; largest part: {biggest}); try " + "; or ".join(tips)
    )
