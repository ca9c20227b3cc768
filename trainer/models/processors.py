"""The processor saved with a model, loaded as transformers loads it.

`AutoProcessor` builds every part the checkpoint saved: tokenizer, image processor and, for
families that have one (Qwen-VL, LLaVA-NeXT-Video, SmolVLM, ...), the torchvision-backed
video processor, so videos go through each family's own video path (temporal patches,
`video_grid_thw`, ...).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, cast

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from transformers import ProcessorMixin

logger = logging.getLogger(__name__)


def load_processor(
    path: Path | str, *, revision: str | None = None, trust_remote_code: bool = False
) -> ProcessorMixin:
    """The processor saved with a model (`AutoProcessor.from_pretrained`)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code
        )
    except ImportError as e:  # a part of the processor needs a package that is missing
        raise UserError(
            f"cannot load the processor of {path}: {e}",
            hint="install the training stack from the lock (`make venv`, or "
            "`pip install -r requirements/lock.txt`), which includes torchvision",
        ) from None
    return cast("ProcessorMixin", processor)
