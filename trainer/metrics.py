"""Metrics of a run (rank 0): `metrics.jsonl`, TensorBoard, W&B / MLflow, and `loss.png`.

Every logged step is one JSON object in `<run>/metrics.jsonl` with `kind` = `train` or
`eval`; the other sinks get the same numbers. W&B and MLflow are used only when the spec
configures them; their credentials come from the environment (`WANDB_API_KEY`,
`MLFLOW_TRACKING_TOKEN`, ...), never from the spec.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from trainer.rundir import RunDir
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a torn last line, from a killed run, is skipped)."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def truncate_after(path: Path, step: int) -> None:
    """Drop records of steps after `step` (logged after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    keep = [r for r in read_metrics(path) if int(r.get("step", 0)) <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    tmp.replace(path)


class MetricsWriter:
    """Writes metrics to every configured sink; create on rank 0 only."""

    def __init__(self, run_dir: RunDir, spec: JobSpec, *, start_step: int) -> None:
        self.run_dir = run_dir
        run_dir.path.mkdir(parents=True, exist_ok=True)
        truncate_after(run_dir.metrics_file, start_step)
        self._file = run_dir.metrics_file.open("a", buffering=1)
        self._tb: Any = None
        self._wandb: Any = None
        self._mlflow: Any = None
        tracking = spec.tracking
        if tracking.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir.tensorboard_dir), purge_step=start_step + 1)
        config = spec.document()  # secret-looking values redacted
        if tracking.wandb is not None:
            wandb = _import_optional("wandb", "tracking.wandb")
            self._wandb = wandb.init(
                project=tracking.wandb.project,
                entity=tracking.wandb.entity,
                name=spec.name,
                id=_stable_id(spec.name, run_dir),
                resume="allow",
                config=config,
                dir=str(run_dir.path),
            )
        if tracking.mlflow is not None:
            mlflow = _import_optional("mlflow", "tracking.mlflow")
            mlflow.set_tracking_uri(tracking.mlflow.tracking_uri)
            mlflow.set_experiment(tracking.mlflow.experiment)
            self._mlflow = mlflow
            mlflow.start_run(run_name=spec.name)
            mlflow.log_params(_flatten(config))

    def log(self, record: dict[str, Any]) -> None:
        """One record: `step` and `kind` plus numbers."""
        self._file.write(json.dumps(record) + "\n")
        step = int(record["step"])
        kind = record.get("kind", "train")
        numbers = {
            f"{kind}/{k}": float(v)
            for k, v in _scalars(record).items()
            if k != "step" and math.isfinite(float(v))
        }
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics(
                {k.replace("/", "."): v for k, v in numbers.items()}, step=step
            )

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.end_run()


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a record; a list of numbers (one per rank, e.g. `host_rss_gib_per_rank`)
    becomes `key/0`, `key/1`, ..."""
    out: dict[str, float] = {}
    for k, v in record.items():
        values = list(enumerate(v)) if isinstance(v, list) else [(None, v)]
        for i, x in values:
            if isinstance(x, int | float) and not isinstance(x, bool):
                out[k if i is None else f"{k}/{i}"] = float(x)
    return out


def _import_optional(module: str, key: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"{key} is set but the '{module}' package is not installed",
            hint=f"pip install {module} (or pip install 'vlaunch[tracking]'), or remove {key}",
        ) from None


def _stable_id(name: str, run_dir: RunDir) -> str:
    import hashlib

    return hashlib.sha1(str(run_dir.path).encode()).hexdigest()[:12] + "-" + name[:40]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:250]
    return out


def plot_loss(metrics_file: Path, out: Path) -> bool:
    """`loss.png`: training loss per step (and eval loss when present). False if no data."""
    records = read_metrics(metrics_file)
    train = [
        (r["step"], r["loss"])
        for r in records
        if r.get("kind") == "train" and isinstance(r.get("loss"), int | float)
    ]
    evals = [
        (r["step"], r["loss"])
        for r in records
        if r.get("kind") == "eval" and isinstance(r.get("loss"), int | float)
    ]
    if not train:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over target tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True
