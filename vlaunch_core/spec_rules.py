"""Cross-field rules of the job spec: run once every key is individually valid, and
collected, like every other problem, into one report."""

from __future__ import annotations

from vlaunch_core.errors import Problem, UserError, did_you_mean
from vlaunch_core.spec import JobSpec
from vlaunch_core.spec_errors import looks_secret


def cross_field_problems(spec: JobSpec) -> list[Problem]:
    """Rules that involve several keys (run after every key is individually valid)."""
    from vlaunch_core.models.presets import PRESETS
    from vlaunch_core.profiles import known_profile_names

    out: list[Problem] = []
    t, tr, d = spec.tuning, spec.train, spec.data

    if t.preset is not None and t.preset not in PRESETS:
        out.append(
            Problem(
                "tuning.preset",
                f"unknown preset '{t.preset}'.{did_you_mean(t.preset, PRESETS)}",
                f"use one of: {', '.join(PRESETS)}",
            )
        )
    if t.preset is None and None in (t.vision_tower, t.projector, t.language_model):
        missing = [
            m for m in ("vision_tower", "projector", "language_model") if getattr(t, m) is None
        ]
        out.append(
            Problem(
                "tuning",
                f"no preset and no mode for {', '.join(missing)}",
                "set tuning.preset (e.g. lora_llm) or a mode for every module",
            )
        )
    modes = t.modes()
    if all(v == "frozen" for v in modes.values()):
        out.append(
            Problem(
                "tuning",
                "every module is frozen: nothing would be trained",
                "train at least one module (e.g. tuning.preset=lora_llm)",
            )
        )
    if not t.uses_lora() and t.differs_from_default("lora"):
        out.append(
            Problem(
                "tuning.lora",
                "LoRA options are set but no module is tuned with LoRA",
                "remove tuning.lora or set tuning.language_model=lora",
            )
        )
    for module, mode in modes.items():
        if mode == "frozen" and t.lr_multipliers.differs_from_default(module):
            out.append(
                Problem(
                    f"tuning.lr_multipliers.{module}",
                    f"a learning-rate multiplier is set for the frozen {module}",
                    f"remove it, or train the {module}",
                )
            )
    if spec.model.adapter is not None and not t.uses_lora():
        out.append(
            Problem(
                "model.adapter",
                "an adapter to continue from is given but the tuning trains no LoRA",
                "tune the modules the adapter holds with LoRA (e.g. tuning.preset=lora_llm), "
                "or, to continue a full fine-tuning, set model.name_or_path to its model/",
            )
        )
    if t.lora.vision_target_modules is not None and modes["vision_tower"] != "lora":
        out.append(
            Problem(
                "tuning.lora.vision_target_modules",
                f"vision LoRA targets are set but the vision tower is '{modes['vision_tower']}'",
                "set tuning.vision_tower=lora, or remove vision_target_modules",
            )
        )
    if modes["language_model"] == "qlora":
        if tr.strategy in ("fsdp", "zero3", "offload"):
            out.append(
                Problem(
                    "train.strategy",
                    f"QLoRA (4-bit) language model cannot be sharded with '{tr.strategy}'",
                    "use train.strategy=ddp or zero2 with QLoRA, or tuning.language_model=lora",
                )
            )
        if tr.precision == "fp32":
            out.append(
                Problem(
                    "train.precision",
                    "QLoRA computes in bf16/fp16, not fp32",
                    "set train.precision=bf16 (or auto)",
                )
            )
    if tr.deterministic and tr.strategy != "ddp":
        out.append(
            Problem(
                "train.deterministic",
                f"deterministic gradients are summed by the ddp strategy only, not by "
                f"'{tr.strategy}'",
                "set train.strategy=ddp (deterministic mode is meant for LoRA-sized trainable "
                "sets), or remove train.deterministic",
            )
        )
    if tr.warmup_steps is not None and tr.differs_from_default("warmup_ratio"):
        out.append(
            Problem(
                "train.warmup_steps",
                "both warmup_steps and warmup_ratio are set",
                "keep one of them",
            )
        )
    if tr.max_steps is not None and tr.differs_from_default("epochs"):
        out.append(
            Problem(
                "train.max_steps",
                "both max_steps and epochs are set",
                "keep one of them (max_steps wins otherwise, silently)",
            )
        )
    if tr.eval_every is not None and d.eval_mixture is None:
        out.append(
            Problem(
                "train.eval_every",
                "evaluation is scheduled but there is no eval data",
                "set data.eval_mixture, or remove train.eval_every",
            )
        )
    if d.packing and d.group_by_length:
        out.append(
            Problem(
                "data.packing",
                "packing and group_by_length are both on",
                "packing already removes padding: set data.group_by_length=false",
            )
        )
    if d.video.fps is not None and d.video.differs_from_default("num_frames"):
        out.append(
            Problem(
                "data.video.fps",
                "both video.fps and video.num_frames are set",
                "keep one: a fixed frame count or a sampling rate",
            )
        )
    if not d.mixture.strip():
        out.append(Problem("data.mixture", "empty mixture", "name at least one dataset"))
    profiles = known_profile_names(spec.resources.profiles)
    prof = spec.resources.profile
    if prof != "auto" and prof not in profiles:
        out.append(
            Problem(
                "resources.profile",
                f"unknown hardware profile '{prof}'.{did_you_mean(prof, profiles)}",
                f"use one of: auto, {', '.join(sorted(profiles))}, "
                "or add one in resources.profiles",
            )
        )
    if prof == "cpu" and tr.precision == "fp16":
        out.append(
            Problem(
                "train.precision",
                "fp16 is not supported on CPU",
                "use train.precision=bf16, fp32 or auto",
            )
        )
    for key in spec.env:
        if looks_secret(key):
            out.append(
                Problem(
                    f"env.{key}",
                    "looks like a secret; secrets never go in a job spec",
                    f"export {key} in your shell (local, Slurm) or use a Kubernetes Secret "
                    "(k8s.hf_token / k8s.wandb_api_key)",
                )
            )
    if spec.slurm.variant is not None:
        from vlaunch_core.models.presets import VARIANTS

        if spec.slurm.variant not in VARIANTS:
            out.append(
                Problem(
                    "slurm.variant",
                    f"unknown variant '{spec.slurm.variant}'."
                    f"{did_you_mean(spec.slurm.variant, VARIANTS)}",
                    f"use one of: {', '.join(VARIANTS)}",
                )
            )
    out += _mixture_problems(spec)
    out += _batch_problems(spec)
    return out


def _mixture_problems(spec: JobSpec) -> list[Problem]:
    """Every dataset the mixtures name must be defined (registry files or inline)."""
    try:
        from vlaunch_core.data.mixture import mixture_problems
    except ImportError:  # pragma: no cover - the data package is part of the distribution
        return []
    return mixture_problems(spec)


def _batch_problems(spec: JobSpec) -> list[Problem]:
    """The batch numbers must multiply out exactly on the spec's own resources."""
    from vlaunch_core.planner import BatchPlanError, resolve_batch
    from vlaunch_core.profiles import ProfileError, resolve_world

    try:
        world = resolve_world(spec)
    except ProfileError:
        return []
    tr = spec.train
    try:
        resolve_batch(
            tr.global_batch_size,
            world.world_size,
            micro=None if tr.micro_batch_size == "auto" else int(tr.micro_batch_size),
            accum=None if tr.grad_accum_steps == "auto" else int(tr.grad_accum_steps),
            rounding=tr.batch_rounding,
        )
    except BatchPlanError as e:
        return [Problem("train.global_batch_size", e.message, e.hint)]
    except UserError as e:
        return [Problem("train", e.message, e.hint)]
    return []
