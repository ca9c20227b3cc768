"""`vlaunch eval`: evaluate a run's (or an export's) weights on held-out data, after training.

The same `Evaluator` as in training, in one process. By default it replays the run's own
evaluation: the same ranks' shards and batch size (from the run's `plan.json`), hence the same
padding and the same numbers as the accuracy the run printed. Results are merged into
`<run>/eval.json` under `evaluations`, keyed by data and weights (`shapes_eval @ final`); the
numbers the trainer wrote (`accuracy_before`, `accuracy_after`, ...) are kept.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.rundir import write_json_atomic
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from trainer.evaluate import EvalResult
    from trainer.trained import Trained
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)

MAX_EVAL_BATCH = 32
"""The trainer's cap on the evaluation batch (see `trainer.loop`)."""


@dataclass
class Evaluation:
    """One `vlaunch eval` result, as stored in eval.json."""

    data: str
    weights: str
    step: int | None
    result: EvalResult
    batch_size: int
    world_size: int
    seconds: float

    @property
    def key(self) -> str:
        return f"{self.data} @ {self.weights}"

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "data": self.data,
            "weights": self.weights,
            "step": self.step,
            "loss": r.loss,
            "accuracy": r.accuracy,
            "correct": r.correct,
            "total": r.total,
            "chance": r.chance,
            "batch_size": self.batch_size,
            "shards": self.world_size,
            "seconds": round(self.seconds, 2),
            "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "examples": r.examples,
        }


def eval_spec(trained: Trained, data: str | None) -> tuple[JobSpec, str]:
    """The spec to evaluate with (`data.eval_mixture` set) and the data's name.

    `data` is a mixture of registered names (`shapes_eval+other`) or a dataset file (JSON /
    JSONL, media relative to it); None means the run's own `data.eval_mixture`.
    """
    from vlaunch_core.spec import DatasetEntry, DataSpec, JobSpec

    spec = trained.spec
    if data is not None and Path(data).expanduser().is_file():
        path = Path(data).expanduser().absolute()
        name = path.stem
        base = spec or JobSpec(
            name="eval", model=trained.base_model_spec(), data=DataSpec(mixture=name)
        )
        datasets = {**base.data.datasets, name: DatasetEntry(data_path=str(path))}
        new_data = base.data.model_copy(update={"datasets": datasets, "eval_mixture": name})
        return base.model_copy(update={"data": new_data}), name
    if spec is None:
        raise UserError(
            f"{trained.path} carries no job spec, so no dataset names are known",
            hint="pass --data FILE.json (a dataset file, media paths relative to it)",
        )
    mixture = data or spec.data.eval_mixture
    if mixture is None:
        raise UserError(
            f"run '{spec.name}' has no data.eval_mixture",
            hint="pass --data NAME (a dataset of the run's registries) or --data FILE.json",
        )
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"eval_mixture": mixture})})
    from vlaunch_core.data.mixture import resolve_mixture

    resolve_mixture(spec, "eval")  # unknown names fail before the model is loaded
    return spec, mixture


def run_shape(trained: Trained) -> tuple[int, int]:
    """(ranks, batch size) of the run's own evaluation, from its plan.json; (1, 8) else."""
    root = _run_root(trained)
    try:
        plan = json.loads((root / "plan.json").read_text()) if root is not None else {}
    except (OSError, ValueError, RecursionError):
        plan = {}
    if not isinstance(plan, dict):
        plan = {}
    world = int(plan.get("world_size") or 1)
    per_device = int(plan.get("micro_batch_size") or 8) * int(plan.get("grad_accum_steps") or 1)
    return world, min(MAX_EVAL_BATCH, per_device)


def _run_root(trained: Trained) -> Path | None:
    if trained.kind == "run":
        return trained.path
    if trained.kind == "checkpoint":
        return trained.path.parent
    return None


def evaluate(
    trained: Trained,
    *,
    data: str | None = None,
    batch_size: int | None = None,
    shards: int | None = None,
    device: str | None = None,
    dtype: str = "float32",
) -> Evaluation:
    """Load the weights and evaluate them (loss, and exact match of greedy answers)."""
    from trainer.evaluate import Evaluator, LocalTarget
    from trainer.loss_head import build_loss
    from trainer.progress import Steps
    from trainer.trained import load_trained

    spec, name = eval_spec(trained, data)
    world, batch = run_shape(trained)
    world = shards or world
    batch = batch_size or batch
    loaded = load_trained(trained, dtype=dtype, device=device)
    t0 = time.perf_counter()
    target = LocalTarget(loaded.model)
    evaluator = Evaluator(
        spec,
        loaded.processor,
        loaded.family,
        target,
        batch_size=batch,
        shards=range(world),
        world_size=world,
        loss=build_loss(spec.train.loss, loaded.model, target.env.device),
    )
    with Steps(f"evaluating {name}", evaluator.total_batches, unit="batches") as steps:
        result = evaluator.run(progress=steps.update)
    step = trained.step if trained.step is not None else _final_step(trained)
    return Evaluation(name, trained.label, step, result, batch, world, time.perf_counter() - t0)


def _final_step(trained: Trained) -> int | None:
    root = _run_root(trained)
    if root is None:
        return None
    try:
        status = json.loads((root / "status.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(status, dict):
        return None
    step = status.get("step") if status.get("state") == "finished" else None
    return int(step) if isinstance(step, int) else None


def record(path: Path, evaluation: Evaluation) -> None:
    """Merge `evaluation` into the eval.json at `path` (other keys are kept)."""
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
            data = loaded if isinstance(loaded, dict) else {}
        except (ValueError, RecursionError):
            logger.warning("%s is not valid JSON: rewriting it", path)
    evaluations = data.get("evaluations")
    if not isinstance(evaluations, dict):
        evaluations = {}
    evaluations[evaluation.key] = evaluation.to_json()
    data["evaluations"] = evaluations
    write_json_atomic(path, data)


def default_output(trained: Trained) -> Path | None:
    """`<run>/eval.json` for runs and checkpoints (None for exports: print only)."""
    root = _run_root(trained)
    return root / "eval.json" if root is not None else None
