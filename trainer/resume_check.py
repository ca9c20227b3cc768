"""Can this spec continue the run? Checked in full before anything of the run is written.

Running a spec whose `name` and `output.dir` name an existing run resumes it from its latest
complete checkpoint. What the checkpoint holds fixes part of the spec: the base model, which
modules are trained and how (the LoRA shapes and scaling), the optimizer and the strategy
(their state's format), the global batch (the data position), and for DeepSpeed's ZeRO
state the precision and the number of ranks. A spec that changes any of them cannot
continue the run: every difference is reported at once, before Ray starts, before the run's
`spec.yaml` and `plan.json` are rewritten, and without touching the run. Everything else
(data, learning rate, steps, evaluation, resources, `train.deterministic`) may change (a
changed `train.deterministic` is logged: the resume is then not exact).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainer.checkpoint import TrainerState
from vlaunch_core.errors import Problem, ProblemReport, UserError

if TYPE_CHECKING:
    from pathlib import Path

    from trainer.rundir import RunDir
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

ZERO = ("zero2", "zero3", "offload")


def saved_spec(checkpoint: Path) -> JobSpec:
    """The spec a checkpoint was written with."""
    from trainer.trained import read_spec

    return read_spec(checkpoint / "spec.yaml")


def _fixed(spec: JobSpec) -> dict[str, Any]:
    """The keys a checkpoint fixes, with their resolved values."""
    t, m = spec.tuning, spec.model
    out: dict[str, Any] = {
        "model.name_or_path": m.name_or_path,
        "model.revision": m.revision,
        **{f"tuning.{k}": v for k, v in t.modes().items()},
        "train.optimizer": spec.train.optimizer,
        "train.strategy": spec.train.strategy,
    }
    if t.uses_lora():
        lora = t.lora
        out |= {
            "tuning.lora.r": lora.r,
            "tuning.lora.alpha": lora.resolved_alpha,
            "tuning.lora.use_dora": lora.use_dora,
            "tuning.lora.target_modules": lora.target_modules,
            "tuning.lora.vision_target_modules": lora.vision_target_modules,
        }
    return out


def resume_problems(
    saved: JobSpec, state: TrainerState, spec: JobSpec, plan: Plan
) -> list[Problem]:
    """Every way `spec` (planned as `plan`) cannot continue a run saved as (`saved`, `state`)."""
    problems: list[Problem] = []
    before, now = _fixed(saved), _fixed(spec)
    for key in dict.fromkeys([*before, *now]):
        if before.get(key) != now.get(key):
            problems.append(
                Problem(
                    key,
                    f"the run was trained with {before.get(key)!r}, this spec says "
                    f"{now.get(key)!r}",
                )
            )
    if state.global_batch_size != plan.batch.global_batch_size:
        problems.append(
            Problem(
                "train.global_batch_size",
                f"the run was trained with global batch {state.global_batch_size}; this plan "
                f"has {plan.batch.global_batch_size}",
                "keep train.global_batch_size (and batch_rounding) of the run",
            )
        )
    if spec.train.strategy in ZERO and state.strategy == spec.train.strategy:
        if state.world_size != plan.batch.world_size:
            problems.append(
                Problem(
                    "resources",
                    f"this {state.strategy} checkpoint was written by {state.world_size} ranks; "
                    f"ZeRO optimizer states cannot be resumed on {plan.batch.world_size}",
                    f"resume on {state.world_size} devices (ddp and fsdp runs resume on any "
                    "number)",
                )
            )
        if state.precision != plan.precision:
            problems.append(
                Problem(
                    "train.precision",
                    f"this {state.strategy} checkpoint holds {state.precision} state; this "
                    f"plan trains in {plan.precision}",
                    f"set train.precision={state.precision}",
                )
            )
    return problems


def check_resume(spec: JobSpec, plan: Plan, run_dir: RunDir) -> None:
    """Raise one report of every incompatibility between `spec` and the run's latest
    complete checkpoint (nothing when the run has none). Reads only."""
    latest = run_dir.latest_checkpoint()
    if latest is None:
        return
    try:
        saved = saved_spec(latest)
    except UserError as e:
        raise UserError(
            f"{latest}: cannot read the spec it was written with: {e.message}",
            hint="the checkpoint is damaged: delete it (the run resumes from the one before)",
        ) from None
    state = TrainerState.read(latest)
    problems = resume_problems(saved, state, spec, plan)
    if problems:
        raise ProblemReport(
            title=f"this spec cannot continue run '{spec.name}' (resuming from "
            f"{latest.name}, step {state.step}); nothing was changed. Keep these keys as "
            "the run had them, or give the job a new name to start a new run",
            problems=problems,
            source=str(run_dir.path),
        )
