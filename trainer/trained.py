"""A fine-tuned model on disk, whatever shape it has, and how to load it back.

`vlaunch infer`, `export` and `eval` (and continued training) accept:

- a run directory (`runs/demo`): the final export (`adapter/` or `model/`), or a checkpoint
  (`--checkpoint latest | step-N`); its `spec.yaml` says which base model, chat options and
  media options the run used;
- a checkpoint folder (`runs/demo/checkpoint_000040`): its `adapter/` and
  `non_lora_trainables.safetensors`, with the `spec.yaml` saved next to them;
- a PEFT adapter folder (`adapter_config.json`): the base model named in it;
- a full model folder (`config.json`): a merged export or any transformers checkpoint.

Exports written by vlaunch carry the run's spec as `vlaunch_spec.yaml`, so an exported model
is prompted with the same system prompt, frame count and image options as the run itself.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trainer.checkpoint import ADAPTER_DIR, NON_LORA_FILE
from trainer.rundir import TRAINER_STATE, RunDir, checkpoint_step
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from vlaunch_core.models.description import ModelDescription
    from vlaunch_core.spec import DataSpec, JobSpec, ModelSpec

logger = logging.getLogger(__name__)

SPEC_FILE = "vlaunch_spec.yaml"
"""The run's spec, written into exports (adapter and merged model) by vlaunch."""
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

Kind = Literal["run", "checkpoint", "adapter", "model"]


@dataclass(frozen=True)
class Trained:
    """Where the pieces of one fine-tuned model are."""

    kind: Kind
    path: Path
    """What the user named."""
    spec: JobSpec | None
    """The run's spec (runs, checkpoints, vlaunch exports); None for foreign folders."""
    adapter: Path | None = None
    """PEFT adapter folder (LoRA weights and modules_to_save)."""
    non_lora: Path | None = None
    """Trained weights outside the adapter (image_newline, a fully tuned part)."""
    model: Path | None = None
    """A complete model folder (merged export, full fine-tuning export)."""
    step: int | None = None
    """Optimizer step of the weights, when known."""

    def sources(self) -> list[Path]:
        """Every folder these weights are read from (an export must not overwrite them)."""
        found = [self.path, self.adapter, self.model, self.non_lora]
        base = Path(self.base_model_spec().name_or_path).expanduser()
        if base.is_dir():  # a local base model folder
            found.append(base)
        return [p for p in found if p is not None]

    @property
    def label(self) -> str:
        """Which weights these are, for tables and eval.json (`final`, `step-40`)."""
        if self.kind == "run" and self.step is None:
            return "final"
        return f"step-{self.step}" if self.step is not None else self.kind

    def base_model_spec(self) -> ModelSpec:
        """The base model the adapter (or trained weights) apply to."""
        from vlaunch_core.spec import ModelSpec

        if self.model is not None:
            return ModelSpec(name_or_path=str(self.model))
        if self.spec is not None:
            return self.spec.model
        assert self.adapter is not None
        config = read_adapter_config(self.adapter)
        base = config.get("base_model_name_or_path")
        if not base:
            raise UserError(
                f"{self.adapter / ADAPTER_CONFIG} names no base model (base_model_name_or_path)",
                hint="add the base model's hub id or folder to adapter_config.json",
            )
        return ModelSpec(name_or_path=str(base), revision=config.get("revision"))

    def data_spec(self) -> DataSpec:
        """Chat and media options the run used (defaults for foreign folders)."""
        from vlaunch_core.spec import DataSpec

        return self.spec.data if self.spec is not None else DataSpec(mixture="-")


@dataclass
class LoadedTrained:
    model: PreTrainedModel
    """The base model with the trained weights (a PeftModel unless merged)."""
    processor: Any
    family: ModelDescription
    trained: Trained


# --------------------------------------------------------------------------- resolving


def read_adapter_config(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{folder / ADAPTER_CONFIG}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{folder / ADAPTER_CONFIG}: not a JSON object")
    return data


def read_spec(path: Path) -> JobSpec:
    """A resolved spec written by vlaunch (run `spec.yaml` or an export's copy)."""
    from vlaunch_core.spec_load import spec_from_dict
    from vlaunch_core.yamlfile import read_yaml

    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: not a job spec")
    return spec_from_dict(raw, base_dir=path.parent, source=str(path), check=False)


def resolve(path: str | Path, checkpoint: str | None = None) -> Trained:
    """What `path` holds: a run, a checkpoint, an adapter or a model folder.

    `checkpoint` (runs only): None or `final` = the final export, else the latest checkpoint
    when the run has no export yet; `latest`; `step-N` (or `N`, `checkpoint_0000N`).
    """
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise UserError(f"{p}: no such run, adapter or model folder")
    if not p.is_dir():
        raise UserError(
            f"{p}: is a file; give a run directory, a checkpoint, an adapter or a model folder"
        )
    has_spec = (p / "spec.yaml").is_file()
    if has_spec and (p / TRAINER_STATE).is_file():
        if checkpoint not in (None, "final", "latest"):
            raise UserError(f"--checkpoint applies to a run directory; {p} is one checkpoint")
        from trainer.commit import inspect

        found = inspect(p)
        if not found.ok:
            raise UserError(
                f"{p} is not a complete checkpoint: {found.verdict}: {found.reason}",
                hint="use the run directory: it takes its newest complete checkpoint",
            )
        return _from_checkpoint(p, read_spec(p / "spec.yaml"), kind="checkpoint")
    if has_spec:
        return _from_run(p, checkpoint)
    if checkpoint not in (None, "final"):
        raise UserError(f"--checkpoint applies to a run directory; {p} is not one")
    spec = read_spec(p / SPEC_FILE) if (p / SPEC_FILE).is_file() else None
    if (p / ADAPTER_CONFIG).is_file():
        non_lora = p / NON_LORA_FILE
        return Trained(
            "adapter", p, spec, adapter=p, non_lora=non_lora if non_lora.is_file() else None
        )
    if (p / "config.json").is_file():
        return Trained("model", p, spec, model=p)
    raise UserError(
        f"{p}: neither a run directory (spec.yaml), an adapter (adapter_config.json) nor a "
        "model folder (config.json)",
        hint="give the run directory (<output.dir>/<name>), its adapter/ or an exported model",
    )


def _from_run(path: Path, checkpoint: str | None) -> Trained:
    run = RunDir(path)
    spec = read_spec(run.spec_file)
    if checkpoint in (None, "final"):
        if (run.adapter_dir / ADAPTER_CONFIG).is_file():
            non_lora = run.adapter_dir / NON_LORA_FILE
            return Trained(
                "run",
                path,
                spec,
                adapter=run.adapter_dir,
                non_lora=non_lora if non_lora.is_file() else None,
            )
        if (run.model_dir / "config.json").is_file():
            return Trained("run", path, spec, model=run.model_dir)
        latest = _latest_complete(run)
        if latest is None or checkpoint == "final":
            status = run.read_status() or {}
            state = status.get("state", "not started")
            raise UserError(
                f"run '{spec.name}' has no trained weights yet (no adapter/, model/ or "
                f"checkpoint; status: {state})",
                hint="wait for its first checkpoint (train.checkpoint_every) or for the end "
                "of training"
                if checkpoint is None
                else "use --checkpoint latest, or let the run finish",
            )
        logger.info("run %s has no final export yet: using %s", spec.name, latest.name)
        return _from_checkpoint(latest, spec, kind="run")
    return _from_checkpoint(_pick_checkpoint(run, checkpoint, spec.name), spec, kind="run")


_STEP = re.compile(r"^(?:step-?|checkpoint_)?(\d+)$")


def _latest_complete(run: RunDir) -> Path | None:
    """The newest complete checkpoint; newer ones that are not (incomplete, damaged) are
    named in a warning (trainer/commit.py)."""
    inspected = run.inspect_checkpoints()
    complete = [i.path for i in inspected if i.ok]
    newest = complete[-1] if complete else None
    for i in inspected:
        if not i.ok and (
            newest is None or (checkpoint_step(i.path) or 0) > (checkpoint_step(newest) or 0)
        ):
            logger.warning(
                "skipping %s (using %s)", i.note(), newest.name if newest else "no checkpoint"
            )
    return newest


def _pick_checkpoint(run: RunDir, name: str, run_name: str) -> Path:
    found = run.checkpoints()
    available = ", ".join(f"step-{checkpoint_step(c)}" for c in found) or "none"
    if name == "latest":
        latest = _latest_complete(run)
        if latest is None:
            raise UserError(
                f"run '{run_name}' has no complete checkpoint yet",
                hint="wait for its first checkpoint",
            )
        return latest
    m = _STEP.match(name)
    if m is None:
        raise UserError(
            f"--checkpoint {name}: expected final, latest or step-N",
            hint=f"checkpoints of this run: {available}",
        )
    step = int(m.group(1))
    for c in found:
        if checkpoint_step(c) == step:
            return c
    raise UserError(
        f"run '{run_name}' has no checkpoint at step {step}",
        hint=f"checkpoints of this run: {available} (older ones are deleted: train.keep_last)",
    )


def _from_checkpoint(folder: Path, spec: JobSpec, *, kind: Kind) -> Trained:
    adapter = folder / ADAPTER_DIR
    non_lora = folder / NON_LORA_FILE
    has_adapter = (adapter / ADAPTER_CONFIG).is_file()
    if not has_adapter and not non_lora.is_file():
        raise UserError(f"{folder}: the checkpoint holds no trained weights")
    return Trained(
        kind,
        folder.parent if kind == "run" else folder,
        spec,
        adapter=adapter if has_adapter else None,
        non_lora=non_lora if non_lora.is_file() else None,
        step=checkpoint_step(folder),
    )


# --------------------------------------------------------------------------- loading


def load_trained(
    trained: Trained, *, dtype: str = "float32", device: str | None = None, merge: bool = False
) -> LoadedTrained:
    """The base model with the trained weights applied, its processor and family.

    LoRA stays a PeftModel unless `merge` (then `merge_and_unload`: a plain transformers
    model). The base is loaded unquantized (QLoRA adapters apply to the full-precision base).
    """
    from trainer.models.loading import load_model
    from trainer.progress import stage

    base = trained.base_model_spec().name_or_path
    with stage(
        f"loading {base}" + (f" and the adapter ({trained.label})" if trained.adapter else "")
    ):
        loaded = load_model(trained.base_model_spec(), dtype=dtype, device=device)
    if loaded.processor is None:
        raise UserError(
            f"model '{trained.base_model_spec().name_or_path}' has no processor to prompt it with",
            hint="use a model folder or hub id with its tokenizer and processor",
        )
    model: Any = loaded.model
    if trained.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(trained.adapter), is_trainable=False)
    if trained.non_lora is not None:
        load_non_lora(model, trained.non_lora)
    if merge and trained.adapter is not None:
        model = model.merge_and_unload()
    model.eval()
    return LoadedTrained(model, loaded.processor, loaded.family, trained)


def load_non_lora(model: Any, path: Path) -> None:
    """Load `non_lora_trainables.safetensors` into `model` (a PeftModel or a plain model);
    every key must land on a parameter."""
    from safetensors.torch import load_file

    from trainer.checkpoint import is_peft

    weights = load_file(str(path))
    if not is_peft(model):  # saved from a PeftModel, loaded into the bare model
        weights = {k.removeprefix("base_model.model."): v for k, v in weights.items()}
    result = model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise UserError(
            f"{path}: weights the model does not have: {result.unexpected_keys[:5]}",
            hint="the trained weights belong to another base model",
        )
