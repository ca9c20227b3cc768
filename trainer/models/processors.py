"""Processors, image-only where their video part needs torchvision.

transformers' video processors (Qwen-VL, LLaVA-NeXT-Video, SmolVLM) are torchvision-backed and
this project does not install torchvision (its wheels break the CPU torch here). The processor
classes themselves only touch their video processor for `videos=` inputs, so we use them
without one: vlaunch samples video frames with PyAV and sends them as images.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from launcher.errors import UserError

if TYPE_CHECKING:
    from transformers import ProcessorMixin

logger = logging.getLogger(__name__)

IMAGE_ONLY = "_vlaunch_image_only"
"""Class attribute marking a processor class built without its video processor."""


def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def processor_class(name: str) -> type[ProcessorMixin]:
    """The transformers processor class `name`, image-only if it needs torchvision."""
    import transformers

    cls = getattr(transformers, name, None)
    if cls is None:
        raise UserError(
            f"unknown processor class '{name}'",
            hint="the model folder needs processor files written by transformers 5",
        )
    if "video_processor" in cls.get_attributes() and not has_torchvision():
        return _image_only(cls)
    return cast("type[ProcessorMixin]", cls)


@functools.cache
def _image_only(cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """A subclass of `cls` without a video processor (saved under the same class name).

    `get_attributes()` drops `video_processor`, so loading and saving skip it. `cls.__init__`
    still hands its sub-processors positionally to `ProcessorMixin.__init__` in its own order;
    a shim placed between them in the MRO names those arguments and drops the video one.
    """
    from transformers.processing_utils import ProcessorMixin

    full = list(cls.get_attributes())

    class _DropVideo(ProcessorMixin):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(zip(full, args, strict=False))
            kwargs.pop("video_processor", None)
            ProcessorMixin.__init__(self, **kwargs)
            self.video_processor = None

    kept = [a for a in full if a != "video_processor"]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "video_processor"}

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.update(zip(kept, args, strict=False))
        cls.__init__(self, video_processor=None, **kwargs)

    init.__signature__ = inspect.signature(cls.__init__)  # type: ignore[attr-defined]  # to_dict

    def from_args_and_dict(
        klass: type, args: list[Any], processor_dict: dict[str, Any], **kwargs: Any
    ) -> Any:
        # ProcessorMixin's version reads parameter names off `__init__.__code__`.
        unused = kwargs.pop("return_unused_kwargs", False)
        settings = {**processor_dict, **kwargs}
        valid = {k: v for k, v in settings.items() if k in accepted and k not in full}
        processor = klass(*args, **valid)
        rest = {k: v for k, v in settings.items() if k not in valid}
        return (processor, rest) if unused else processor

    return type(
        cls.__name__,
        (cls, _DropVideo),
        {
            "__init__": init,
            "from_args_and_dict": classmethod(from_args_and_dict),
            "get_attributes": classmethod(lambda k: kept),
            "__module__": cls.__module__,
            IMAGE_ONLY: True,
            "__doc__": f"{cls.__name__} without its (torchvision) video processor.",
        },
    )


def load_processor(
    path: Path | str, *, revision: str | None = None, trust_remote_code: bool = False
) -> ProcessorMixin:
    """The processor saved with a model (`AutoProcessor`, image-only where needed)."""
    from transformers import AutoProcessor
    from transformers.processing_utils import ProcessorMixin

    try:
        config = ProcessorMixin.get_processor_dict(path, revision=revision)[0]
    except OSError:
        config = {}
    name = config.get("processor_class")
    if isinstance(name, str) and not trust_remote_code:
        cls = processor_class(name)
        if getattr(cls, IMAGE_ONLY, False):
            logger.info("loading %s without its video processor (needs torchvision)", name)
        return cls.from_pretrained(path, revision=revision or "main")
    processor = AutoProcessor.from_pretrained(
        path, revision=revision, trust_remote_code=trust_remote_code
    )
    return cast("ProcessorMixin", processor)
