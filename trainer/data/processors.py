"""The processor and family of a model, for commands that need no weights (`data check`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlaunch_core.errors import UserError
from vlaunch_core.models.families import Family, detect_family, get_family


def load_processor(name_or_path: str, family: str | None = None) -> tuple[Any, Family]:
    """The processor of a local folder, a cached hub id or `tiny:<family>`, and its family."""
    from trainer.models.loading import tiny_model_path
    from trainer.models.processors import load_processor as load
    from vlaunch_core.models.configs import RANDOM_PREFIX, TINY_PREFIX, model_config_dict

    if name_or_path.startswith(RANDOM_PREFIX):
        raise UserError(
            f"{name_or_path} has no tokenizer or processor",
            hint="count tokens with a local model folder, a cached hub id or "
            "tiny:<family> (--model)",
        )
    config = model_config_dict(name_or_path)
    fam = get_family(family) if family else get_family(detect_family(config))
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
    return processor, fam
