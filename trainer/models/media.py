"""What media a model takes per sample: one statement per architecture, from the same source
as the model description (`trainer.models.describe`: a video processor or video token, the
quirks' `max_images` and `video`), shown by `vlaunch models` and written to
docs/model-media.md (`trainer.models.catalog.media_doc`):

    python -m trainer.models.catalog > docs/model-media.md

Three cases, which the data pipeline follows (`trainer/data/chat.py`, `index_dataset`):
- **video**: the processor has a video path; videos go through it as videos;
- **video as frames**: several images per sample but no video path; a video's sampled frames
  go in as that many images;
- **one image**: one image per sample; a sample with more images, or any video, is a data
  error (`unsupported_media`), reported before training, never trained on in part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlaunch_core.models.description import ModelDescription


@dataclass(frozen=True)
class MediaSupport:
    video: bool
    """The processor has a video path."""
    multi_image: bool
    """Several images per sample."""

    @classmethod
    def for_type(cls, model_type: str, config: dict[str, Any] | None = None) -> MediaSupport:
        """As `describe` derives it for `model_type` (and its config, when given)."""
        from trainer.models.describe import _has_video
        from vlaunch_core.models.quirks import quirks_for

        quirks = quirks_for(model_type)
        video = quirks.video if quirks.video is not None else _has_video(model_type, config or {})
        return cls(video=video, multi_image=quirks.max_images is None)

    @classmethod
    def of(cls, description: ModelDescription) -> MediaSupport:
        return cls(video=description.video, multi_image=description.multi_image)

    @property
    def images(self) -> str:
        return "several" if self.multi_image else "one"

    @property
    def videos(self) -> str:
        if self.video:
            return "yes"
        return "as frames" if self.multi_image else "no"

    def statement(self) -> str:
        """One line: what a sample may hold."""
        if self.video:
            return "images (several per sample) and videos (through its video processor)"
        if self.multi_image:
            return "images (several per sample); videos as frames (each sampled frame one image)"
        return (
            "one image per sample, no videos (a sample with more is a data error, not trained "
            "on its first image)"
        )
