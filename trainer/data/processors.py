"""The processor and description of a model, for commands that need no weights (`data check`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from vlaunch_core.models.description import ModelDescription


def load_processor(name_or_path: str) -> tuple[Any, ModelDescription]:
    """The processor of a local folder, a cached hub id or `tiny:<type>`, and the model's
    description (built on the meta device: no weights are read)."""
    from trainer.models.describe import describe_spec
    from trainer.models.processors import load_processor as load
    from trainer.models.tiny.folder import tiny_model_path
    from vlaunch_core.models.configs import RANDOM_PREFIX, TINY_PREFIX
    from vlaunch_core.spec import ModelSpec

    if name_or_path.startswith(RANDOM_PREFIX):
        raise UserError(
            f"{name_or_path} has no tokenizer or processor",
            hint="count tokens with a local model folder, a cached hub id or tiny:<type> (--model)",
        )
    description = describe_spec(ModelSpec(name_or_path=name_or_path))
    path: str | Path = name_or_path
    if name_or_path.startswith(TINY_PREFIX):
        path = tiny_model_path(name_or_path.removeprefix(TINY_PREFIX))
    try:
        processor = load(path)
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot load the processor of '{name_or_path}': {e}",
            hint="give a local model folder or a hub id already in the Hugging Face cache "
            "(nothing is downloaded)",
        ) from None
    return processor, description
