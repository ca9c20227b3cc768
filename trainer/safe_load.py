"""Reading checkpoint files back without running anything they hold.

Every `.pt` file a resume reads goes through `torch.load(weights_only=True)`: torch's
restricted unpickler, which builds tensors, containers and numbers and refuses any other
global. DeepSpeed reads its own `deepspeed/` files with `torch.load(weights_only=False)`
(a pickle planted in `mp_rank_00_model_states.pt` ran on resume); `guard_deepspeed` points
the engine's checkpoint reader at `torch_load` instead, allowing only the few plain-data
classes DeepSpeed's files hold (its ZeRO stage enum, loss-scaler settings and fragment
addresses). A refused or unreadable file is one user error naming it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vlaunch_core.errors import UserError

logger = logging.getLogger(__name__)


def deepspeed_safe_globals() -> list[Any]:
    """The plain-data classes in DeepSpeed 0.19's checkpoint files (checked with
    `torch.serialization.get_unsafe_globals_in_checkpoint` on zero2/zero3/offload runs)."""
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:
        return []
    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; a file it refuses or cannot read is a user
    error naming it (nothing in it has run)."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(deepspeed_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = next(
            (line for line in lines if "GLOBAL" in line or "WeightsUnpickler" in line), ""
        )
        detail = detail.removeprefix("WeightsUnpickler error:").strip().split(". ")[0]
        raise UserError(
            f"{path}: refused: it holds Python objects that a weights-only load does not "
            f"build ({detail[:200]}); nothing in it was run",
            hint="a checkpoint holds tensors and numbers only; this file was not written by "
            "vlaunch as it is now: delete the checkpoint (the run resumes from the one before)",
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise UserError(
            f"{path}: cannot be read: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
            hint="the file is damaged: delete the checkpoint (the run resumes from the one before)",
        ) from None


def guard_deepspeed(engine: Any) -> None:
    """Make a DeepSpeed engine read checkpoints with `torch_load` (weights only)."""
    reader = engine.checkpoint_engine

    def load(path: str, map_location: Any = None) -> Any:
        return torch_load(path, map_location=map_location or "cpu")

    reader.load = load


def scan(folder: Path) -> None:
    """Refuse, before anything is loaded, a checkpoint with a `.pt` file that a weights-only
    load would refuse: the globals its pickle names are read without running it
    (`torch.serialization.get_unsafe_globals_in_checkpoint`), and any outside torch's
    allowlist and `deepspeed_safe_globals` is a user error naming the file and the global."""
    import torch

    allowed = {f"{c.__module__}.{c.__qualname__}" for c in deepspeed_safe_globals()}
    for path in sorted(folder.rglob("*.pt")):
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as e:  # not a zip-format torch file: nothing vlaunch writes
            raise UserError(
                f"{path}: refused: not a checkpoint file torch wrote ({type(e).__name__})",
                hint="delete the checkpoint (the run resumes from the one before)",
            ) from None
        refused = [g for g in unsafe if g not in allowed]
        if refused:
            raise UserError(
                f"{path}: refused: it holds Python objects a weights-only load does not build "
                f"({', '.join(refused[:3])}); nothing in it was run",
                hint="a checkpoint holds tensors and numbers only; this file was not written "
                "by vlaunch as it is now: delete the checkpoint (the run resumes from the one "
                "before)",
            )
