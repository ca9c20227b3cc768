"""Images and videos of samples: safe paths, Pillow for images, PyAV for video frames.

The path rule: every media path of a dataset, relative or absolute, must resolve (symlinks
followed) to a location inside the dataset's media root (`media_dir`, default the folder of
`data_path`). Relative paths are joined to that root. A path that resolves outside it, such as
`../../etc/passwd`, `/etc/passwd` or a symlink pointing out, is refused before anything opens
it. Datasets of absolute paths (lmms-finetune style) set `media_dir` to a common ancestor of
their files (e.g. `/data`); `media_dir: /` allows any path on purpose.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

    from vlaunch_core.data.formats import Media

MediaInput = Path | bytes
"""What the loaders read: a file (already resolved under its root) or embedded bytes."""

#: Targets further apart than this are reached with a seek instead of decoding through.
SEEK_GAP_SECONDS = 2.0
#: Formats whose EXIF block sits in the header (orientation known without decoding).
_EXIF_FORMATS = frozenset({"JPEG", "MPO", "TIFF", "WEBP"})


class MediaError(UserError):
    """A media file that is refused, missing or unreadable; `kind` is its problem kind."""

    def __init__(self, kind: str, path: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.kind = kind
        self.path = path
        self.detail = message


class MediaRoot:
    """Resolves media paths under one root and refuses any that would leave it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._real = os.path.realpath(self.root)
        self._prefix = self._real.rstrip(os.sep) + os.sep
        self._folders: dict[str, str] = {}

    def resolve(self, name: str) -> Path:
        """The real path of `name`; raises `MediaError('media_escape')` outside the root."""
        if not name or "\x00" in name:
            raise MediaError("media_escape", repr(name), "not a valid file name")
        joined = os.path.join(self.root, name)  # an absolute `name` replaces the root
        real = self._realpath(joined)
        if real != self._real and not real.startswith(self._prefix):
            raise MediaError(
                "media_escape",
                name,
                f"resolves to {real}, outside the media root {self._real}; it is not opened",
                hint="keep media under the dataset's media_dir (or set media_dir to a folder "
                "that contains them)",
            )
        return Path(real)

    def locate(self, ref: Media) -> MediaInput:
        """A path resolved under the root (`resolve`), or the bytes of embedded media."""
        if isinstance(ref, str):
            return self.resolve(ref)
        return ref.data

    def _realpath(self, path: str) -> str:
        """`os.path.realpath`, with the folders' real paths cached (one lstat per file)."""
        folder, base = os.path.split(path)
        if base in ("", ".", ".."):
            return os.path.realpath(path)
        real_folder = self._folders.get(folder)
        if real_folder is None:
            if len(self._folders) > 100_000:
                self._folders.clear()
            real_folder = self._folders[folder] = os.path.realpath(folder)
        candidate = os.path.join(real_folder, base)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


# --------------------------------------------------------------------------- images


def _allow_pixels(max_pixels: int) -> None:
    """Let our own limit, checked before decoding, govern instead of Pillow's default."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _label(src: MediaInput) -> str:
    return str(src) if isinstance(src, Path) else f"embedded image ({len(src)} bytes)"


def _open_image(src: MediaInput, max_pixels: int) -> PILImage.Image:
    from PIL import Image

    _allow_pixels(max_pixels)
    path = _label(src)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(src if isinstance(src, Path) else io.BytesIO(src))
    except FileNotFoundError:
        raise MediaError("missing_media", str(path), "no such file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError("unreadable_media", str(path), f"not a readable image ({e})") from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise MediaError(
            "unreadable_media",
            str(path),
            f"{width}x{height} = {width * height} pixels is over data.image.max_pixels="
            f"{max_pixels} (decompression-bomb guard)",
            hint="resize the image, or raise data.image.max_pixels if it is genuine",
        )
    return im


def probe_image(src: MediaInput, max_pixels: int) -> tuple[int, int]:
    """Width and height from the file header (no pixel decoding)."""
    im = _open_image(src, max_pixels)
    with im:
        size: tuple[int, int] = im.size
        # EXIF orientations 5-8 swap the displayed width and height.
        if _exif_orientation(im) in (5, 6, 7, 8):
            size = (size[1], size[0])
        return size


def _exif_orientation(im: PILImage.Image) -> int:
    if im.format not in _EXIF_FORMATS:  # PNG's getexif() would decode the whole image
        return 1
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block is not worth refusing the image for
        return 1


def load_image(
    src: MediaInput, max_pixels: int, pad_background: tuple[int, int, int] | None = None
) -> PILImage.Image:
    """Decode an image: EXIF orientation applied, RGB, optionally padded to a square."""
    from PIL import Image, ImageOps

    path = _label(src)
    im = _open_image(src, max_pixels)
    try:
        with im:
            im.load()
            oriented = ImageOps.exif_transpose(im) or im
            rgb = oriented.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
        raise MediaError("unreadable_media", path, f"cannot decode the image ({e})") from None
    if pad_background is not None and rgb.width != rgb.height:
        side = max(rgb.size)
        square = Image.new("RGB", (side, side), pad_background)
        square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
        rgb = square
    return rgb


# --------------------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    duration: float
    """Seconds (0 when the container does not say)."""
    frames: int
    """Frame count from the header (0 when unknown)."""


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError, ValueError, IndexError)


def _open_video(src: MediaInput) -> Any:
    import av

    if isinstance(src, Path) and not src.is_file():
        raise MediaError("missing_media", str(src), "no such file")
    path = str(src) if isinstance(src, Path) else f"embedded video ({len(src)} bytes)"
    try:
        container = av.open(str(src) if isinstance(src, Path) else io.BytesIO(src))
    except _av_errors() as e:
        raise MediaError("unreadable_media", path, f"not a readable video ({e})") from None
    if not container.streams.video:
        container.close()
        raise MediaError("unreadable_media", path, "has no video stream")
    return container


def _info(container: Any) -> VideoInfo:
    import av

    stream = container.streams.video[0]
    duration = 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    return VideoInfo(
        stream.codec_context.width, stream.codec_context.height, duration, int(stream.frames or 0)
    )


def probe_video(src: MediaInput) -> VideoInfo:
    """Size, duration and frame count from the container header (no decoding)."""
    container = _open_video(src)
    with container:
        return _info(container)


def frame_count(info: VideoInfo, num_frames: int, fps: float | None, max_frames: int) -> int:
    """Frames to sample: `num_frames`, or `duration x fps` capped at `max_frames`."""
    if fps is None:
        return num_frames
    return max(1, min(max_frames, round(info.duration * fps)))


def load_video(
    src: MediaInput,
    num_frames: int,
    fps: float | None = None,
    max_frames: int = 64,
    stats: dict[str, int] | None = None,
) -> np.ndarray:
    """Frames sampled uniformly over the video as a (T, H, W, 3) uint8 array.

    Each target time is the centre of one of T equal segments. Frames are decoded forward
    from the nearest keyframe before each target; far-apart targets are reached by seeking,
    so a long video is never decoded whole. `stats` (optional) receives the number of
    frames decoded (`decoded`) and seeks done (`seeks`).
    """
    import numpy as np

    path = str(src) if isinstance(src, Path) else f"embedded video ({len(src)} bytes)"
    container = _open_video(src)
    try:
        with container:
            info = _info(container)
            n = frame_count(info, num_frames, fps, max_frames)
            frames = _sample_frames(container, info, n, stats if stats is not None else {})
    except MediaError:
        raise
    except _av_errors() as e:
        raise MediaError("unreadable_media", path, f"cannot decode the video ({e})") from None
    if not frames:
        raise MediaError("unreadable_media", path, "no frame could be decoded")
    return np.stack(frames)


def _sample_frames(
    container: Any, info: VideoInfo, n: int, stats: dict[str, int]
) -> list[np.ndarray]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stats.setdefault("decoded", 0)
    stats.setdefault("seeks", 0)
    if info.duration <= 0:
        return _sample_by_count(container, n)
    time_base = float(stream.time_base)
    start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    targets = [start + info.duration * (i + 0.5) / n for i in range(n)]
    out: list[np.ndarray] = []
    decoder: Any = None
    current: Any = None  # last decoded frame
    for t in targets:
        here = None if current is None else float(current.pts * time_base)
        if decoder is None or here is None or t - here > SEEK_GAP_SECONDS:
            container.seek(int(t / time_base), stream=stream, backward=True, any_frame=False)
            stats["seeks"] += 1
            decoder = container.decode(stream)
            current = None
        if current is None or float(current.pts * time_base) < t - _half_frame(stream):
            for frame in decoder:
                stats["decoded"] += 1
                if frame.pts is None:
                    continue
                current = frame
                if float(frame.pts * time_base) >= t - _half_frame(stream):
                    break
        if current is not None:
            out.append(current.to_ndarray(format="rgb24"))
    return out


def _half_frame(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return 0.5 / float(rate) if rate else 0.0


def _sample_by_count(container: Any, n: int) -> list[np.ndarray]:
    """Fallback for containers without a duration: count the frames, then pick n."""
    stream = container.streams.video[0]
    total = sum(1 for _ in container.decode(stream))
    if total == 0:
        return []
    wanted = sorted({min(total - 1, int(total * (i + 0.5) / n)) for i in range(n)})
    container.seek(0, stream=stream)
    picked: dict[int, np.ndarray] = {}
    for i, frame in enumerate(container.decode(stream)):
        if i in wanted:
            picked[i] = frame.to_ndarray(format="rgb24")
        if i >= wanted[-1]:
            break
    return [
        picked[min(total - 1, int(total * (i + 0.5) / n))]
        for i in range(n)
        if min(total - 1, int(total * (i + 0.5) / n)) in picked
    ]
