"""Small sample media for tiny models: a 48x40 image and an 8-frame video."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

IMAGE_WIDTH, IMAGE_HEIGHT = 48, 40
VIDEO_FRAMES = 8


def sample_image(seed: int = 0) -> Image.Image:
    """A red disc on a dark background (another colour per seed)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_WIDTH, IMAGE_HEIGHT), (20, 20, 20))
    colour = ((220, 30, 30), (30, 200, 40), (40, 60, 220))[seed % 3]
    ImageDraw.Draw(image).ellipse((8, 6, 36, 32), fill=colour)
    return image


def sample_video(frames: int = VIDEO_FRAMES) -> Any:
    """A disc moving right, as a (frames, height, width, 3) uint8 array."""
    import numpy as np

    video = np.full((frames, IMAGE_HEIGHT, IMAGE_WIDTH, 3), 20, dtype=np.uint8)
    for t in range(frames):
        x = 4 + 3 * t
        video[t, 12:28, x : x + 16] = (220, 30, 30)
    return video


def video_inputs(count: int = 1) -> dict[str, Any]:
    """Processor keyword arguments for `count` sample videos. Metadata is asked for: some
    processors write frame timestamps from it and fail without (Cosmos3-Edge, Muse Glimmer);
    drop `video_metadata` from the output before the model sees it."""
    return {"videos": [sample_video() for _ in range(count)], "return_metadata": True}
