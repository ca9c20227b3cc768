"""What a checkpoint holds, and how it is written and read back.

    checkpoint_000040/
      adapter/                          PEFT adapter (LoRA runs): PeftModel.from_pretrained works
      non_lora_trainables.safetensors   trainable weights that are not in the adapter (projector,
                                        LayerNorms; every weight in full fine-tuning)
      optimizer.pt                      optimizer (+ fp16 grad scaler) state, full, by rank 0
      deepspeed/                        ... or DeepSpeed's per-rank ZeRO state instead
      scheduler.pt                      LR scheduler state
      rng/rank_00000.pt                 python, numpy, torch (and CUDA) RNG states per rank
      plan.json, spec.yaml              the plan and the resolved spec that wrote it
      trainer_state.json                step, samples consumed, batch numbers
      vlaunch_checkpoint.json           the commit manifest: every file's size and SHA-256,
                                        written last (trainer/commit.py)

Only trainable weights are saved: a LoRA checkpoint of a 7B model is megabytes, not 14 GB.
Sharded strategies gather them in full first. Everything read back goes through
`torch.load(weights_only=True)` (trainer/safe_load.py, DeepSpeed's own files included) or
safetensors.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from trainer.rundir import TRAINER_STATE, write_json_atomic
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trainer.strategies.base import Strategy
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
NON_LORA_FILE = "non_lora_trainables.safetensors"
SCHEDULER_FILE = "scheduler.pt"
RNG_DIR = "rng"


@dataclass
class TrainerState:
    """Where training is: enough to continue exactly (see docs/trainer.md)."""

    step: int
    """Optimizer steps done."""
    samples_consumed: int
    """Training samples consumed over all ranks (step x global batch)."""
    total_steps: int
    global_batch_size: int
    micro_batch_size: int
    grad_accum_steps: int
    world_size: int
    strategy: str
    precision: str
    seed: int
    loss: float | None = None
    stopped: bool = False
    """True when written because a stop was requested (the run is not finished)."""

    @classmethod
    def read(cls, folder: Path) -> TrainerState:
        path = folder / TRAINER_STATE
        try:
            data = json.loads(path.read_text())
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError, AttributeError, RecursionError) as e:
            raise UserError(
                f"{path}: not a trainer state ({type(e).__name__}: {e})",
                hint="the checkpoint is damaged: delete it (the run resumes from the one before)",
            ) from None


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """This process's RNG states as plain tensors (loadable with weights_only=True)."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- weights


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def split_trainables(
    model: nn.Module, trainable: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights PEFT saves in the adapter, the rest) of a full trainable state dict."""
    if not is_peft(model):
        return {}, trainable
    from peft import get_peft_model_state_dict

    adapter = get_peft_model_state_dict(model, state_dict=trainable)
    in_adapter = {n for n in trainable if "lora_" in n or ".modules_to_save." in n}
    rest = {n: t for n, t in trainable.items() if n not in in_adapter}
    return adapter, rest


def save_weights(model: nn.Module, trainable: dict[str, torch.Tensor], folder: Path) -> None:
    """The adapter (PEFT format) and the other trainables (safetensors). Rank 0 only."""
    from safetensors.torch import save_file

    adapter, rest = split_trainables(model, trainable)
    if is_peft(model):
        out = folder / ADAPTER_DIR
        out.mkdir(parents=True, exist_ok=True)
        config: Any = model.peft_config["default"]  # type: ignore[index]
        config.save_pretrained(str(out))
        save_file(
            {k: v.contiguous() for k, v in adapter.items()},
            str(out / "adapter_model.safetensors"),
            metadata={"format": "pt"},
        )
    if rest:
        save_file(
            {k: v.contiguous() for k, v in rest.items()},
            str(folder / NON_LORA_FILE),
            metadata={"format": "pt"},
        )


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load a checkpoint's trainable weights into the (unwrapped) model."""
    from safetensors.torch import load_file

    loaded: set[str] = set()
    adapter_file = folder / ADAPTER_DIR / "adapter_model.safetensors"
    if is_peft(model) and adapter_file.is_file():
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(str(adapter_file)))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise RuntimeError(f"{adapter_file}: keys the model does not have: {unexpected[:5]}")
        loaded |= {n for n, _ in model.named_parameters() if "lora_" in n}
    if (folder / NON_LORA_FILE).is_file():
        rest = load_file(str(folder / NON_LORA_FILE))
        result = model.load_state_dict(rest, strict=False)
        if result.unexpected_keys:
            raise RuntimeError(
                f"{folder / NON_LORA_FILE}: keys the model does not have: "
                f"{result.unexpected_keys[:5]}"
            )
        loaded |= set(rest)
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and n not in loaded and ".modules_to_save." not in n
    ]
    if missing:
        raise RuntimeError(f"{folder}: no saved value for trainable weights {missing[:5]}")


# --------------------------------------------------------------------------- whole checkpoint


def write_checkpoint(
    folder: Path,
    *,
    strategy: Strategy,
    scheduler: Any,
    state: TrainerState,
    spec: JobSpec,
    plan: Plan,
) -> None:
    """Write this rank's part of a checkpoint into `folder`. Collective (all ranks call)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    rank = strategy.env.rank
    trainable = strategy.trainable_state_dict()
    strategy.save_optimizer(folder)
    (folder / RNG_DIR).mkdir(exist_ok=True)
    torch.save(rng_state(), folder / RNG_DIR / f"rank_{rank:05d}.pt")
    if rank != 0:
        return
    save_weights(strategy.base_model, trainable, folder)
    torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
    write_json_atomic(folder / "plan.json", plan.to_json())
    (folder / "spec.yaml").write_text(spec_yaml(spec))
    write_json_atomic(folder / TRAINER_STATE, asdict(state))  # the host commits it after


def restore_training_state(folder: Path, *, strategy: Strategy, scheduler: Any) -> None:
    """Optimizer, scheduler and this rank's RNG from a checkpoint (weights come earlier)."""
    from trainer.safe_load import torch_load

    strategy.load_optimizer(folder)
    scheduler.load_state_dict(torch_load(folder / SCHEDULER_FILE))
    rng_file = folder / RNG_DIR / f"rank_{strategy.env.rank:05d}.pt"
    if rng_file.is_file():
        set_rng_state(torch_load(rng_file))
    else:
        logger.info("no RNG state for rank %d in %s (the world grew)", strategy.env.rank, folder)


def spec_yaml(spec: JobSpec) -> str:
    """The spec as the run's files hold it (no nulls; secret-looking values redacted)."""
    return yaml.safe_dump(spec.document(exclude_none=True), sort_keys=False)
