"""A mixture as a map-style dataset over sources, samples read back on demand.

Every dataset of the mixture is a `Source` (`vlaunch_core.data.sources`): JSON files,
Parquet, Arrow (`save_to_disk`, hub datasets), WebDataset tar shards. A JSON file is indexed
up front, as it always was: one streaming pass records each sample's byte span and a length
estimate (`FileIndex`, about 20 bytes a sample), resolving every media path under its root
and checking that the file exists, so a missing image or an escaping path stops the run before
the first step. Sharded sources are not read whole at start: they are counted from their
metadata (Parquet footers, Arrow batch headers, tar member headers or a wids index), and a
sample that turns out unreadable during training (bad record, bad media) is replaced by the
next one like an overlength drop, with a warning naming its shard and row (`vlaunch data
check` finds them all before a run). `__getitem__` reads one record, parses it, decodes its
media and encodes it; each data-loader worker keeps only the shards or row groups it is
reading open.
"""

from __future__ import annotations

import bisect
import logging
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlaunch_core.data.formats import Sample, parse_row
from vlaunch_core.data.media import MediaError, MediaRoot, load_image, load_video
from vlaunch_core.data.order import MixtureOrder, PartLayout
from vlaunch_core.data.problems import DataProblem
from vlaunch_core.data.registry import Dataset
from vlaunch_core.data.sources import Source
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from trainer.data.encode import Encoded, SampleEncoder
    from vlaunch_core.spec import DataSpec

logger = logging.getLogger(__name__)

MAX_SUBSTITUTIONS = 100


@dataclass
class FileIndex:
    """Where each sample of one dataset file is, and a length estimate for grouping."""

    path: str
    offsets: array = field(default_factory=lambda: array("q"))
    sizes: array = field(default_factory=lambda: array("q"))
    lengths: array = field(default_factory=lambda: array("i"))
    """Words of the conversation, negative for text-only samples (LLaVA's convention)."""
    images: int = 0
    videos: int = 0

    def __len__(self) -> int:
        return len(self.offsets)


def index_dataset(
    ds: Dataset,
    check_media: bool = True,
    *,
    max_images: int | None = None,
    videos: bool = True,
    model: str = "the model",
) -> tuple[FileIndex, list[DataProblem]]:
    """Index one dataset file; every problem found is returned, none raised. A sample with
    more images than `max_images`, or with a video when `videos` is False, is a problem."""
    from vlaunch_core.data.formats import iter_samples

    path = str(ds.data_path)
    index = FileIndex(path)
    if not ds.data_path.is_file():
        return index, [
            DataProblem("missing_file", path, -1, f"dataset file of '{ds.name}' not found")
        ]
    problems: list[DataProblem] = []
    root = MediaRoot(ds.media_dir)
    e = ds.entry
    for rec in iter_samples(
        path,
        fmt=e.format,
        text_field=e.text_field,
        image_field=e.image_field,
        video_field=e.video_field,
    ):
        problems += rec.problems
        sample = rec.sample
        if sample is None:
            continue
        for kind, names in (("image", sample.images), ("video", sample.videos)):
            for k, name in enumerate(names):
                if not isinstance(name, str):
                    continue  # embedded bytes: nothing to find on disk
                try:
                    real = root.resolve(name)
                except MediaError as err:
                    problems.append(
                        DataProblem(err.kind, path, rec.index, f"{kind} {k} '{name}': {err.detail}")
                    )
                    continue
                if check_media and not real.is_file():
                    problems.append(
                        DataProblem(
                            "missing_media", path, rec.index, f"{kind} {k} '{name}': no such file"
                        )
                    )
        if max_images is not None and len(sample.images) > max_images:
            problems.append(
                DataProblem(
                    "unsupported_media",
                    path,
                    rec.index,
                    f"{len(sample.images)} images, but {model} takes at most {max_images} per "
                    "sample",
                )
            )
        if sample.videos and not videos:
            problems.append(
                DataProblem(
                    "unsupported_media",
                    path,
                    rec.index,
                    f"{len(sample.videos)} video(s), but {model} takes neither videos nor "
                    "several images (video frames)",
                )
            )
        index.offsets.append(rec.offset)
        index.sizes.append(rec.length)
        words = max(1, sample.text_words())
        index.lengths.append(words if sample.images or sample.videos else -words)
        index.images += len(sample.images)
        index.videos += len(sample.videos)
    return index, problems


@dataclass(frozen=True)
class MediaOptions:
    max_pixels: int = 89_478_485
    pad_background: tuple[int, int, int] | None = None
    """Pad images to a square with this colour (`data.image.aspect_ratio: pad`)."""
    num_frames: int = 8
    fps: float | None = None
    max_frames: int = 64

    @classmethod
    def from_spec(cls, data: DataSpec, processor: Any = None) -> MediaOptions:
        background = None
        if data.image.aspect_ratio == "pad":
            mean = getattr(getattr(processor, "image_processor", None), "image_mean", None)
            mean = mean if mean is not None and len(mean) == 3 else (0.5, 0.5, 0.5)
            background = (int(mean[0] * 255), int(mean[1] * 255), int(mean[2] * 255))
        return cls(
            data.image.max_pixels,
            background,
            data.video.num_frames,
            data.video.fps,
            data.video.max_frames,
        )


class UnusableSample(UserError):
    """A record of a sharded source that cannot be trained on (bad record or media)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, hint="run `vlaunch data check` on the dataset")


@dataclass
class MixturePart:
    dataset: Dataset
    source: Source
    repeat: int
    lengths: array | None = None
    """Length estimates (words, negative for text-only samples); from the JSON index, or
    computed on first use for sharded sources."""
    indexed: bool = False
    """Every sample was checked up front (JSON): a bad one now means the file changed."""

    @property
    def index(self) -> Source:  # the name earlier code used
        return self.source


class MixtureDataset:
    """Map-style dataset over a mixture (each part repeated `repeat` times in a row)."""

    def __init__(
        self,
        parts: Sequence[MixturePart],
        encoder: SampleEncoder,
        media: MediaOptions,
        substitute_dropped: bool = True,
    ) -> None:
        self.parts = list(parts)
        self.encoder = encoder
        self.media = media
        self.substitute_dropped = substitute_dropped
        self._roots = [MediaRoot(p.source.media_root) for p in self.parts]
        self._sizes = [len(p.source) for p in self.parts]
        self._starts: list[int] = []
        total = 0
        for p, n in zip(self.parts, self._sizes, strict=True):
            self._starts.append(total)
            total += n * p.repeat
        self._len = total
        self._warned: set[tuple[int, int]] = set()

    def __len__(self) -> int:
        return self._len

    @property
    def starts(self) -> list[int]:
        """The first mixture position of each part."""
        return list(self._starts)

    def locate(self, i: int) -> tuple[int, int]:
        """(part number, sample index in its source) of mixture position `i`."""
        if not 0 <= i < self._len:
            raise IndexError(i)
        k = bisect.bisect_right(self._starts, i) - 1
        return k, (i - self._starts[k]) % self._sizes[k]

    def order(self, seed: int, shuffle: bool = True) -> MixtureOrder:
        """The training order: sharded parts visit their row groups or shards in turn."""
        layouts = []
        for p, n in zip(self.parts, self._sizes, strict=True):
            blocks = p.source.blocks()
            layouts.append(
                PartLayout(
                    n,
                    p.repeat,
                    None if blocks is None else tuple(blocks),
                    p.source.access == "sequential",
                )
            )
        return MixtureOrder(layouts, seed, shuffle)

    def lengths(self) -> list[int]:
        """Length estimates in mixture order (for the length-grouped sampler)."""
        out: list[int] = []
        for p in self.parts:
            if p.lengths is None:
                p.lengths = _source_lengths(p.source, p.dataset)
            out.extend(list(p.lengths) * p.repeat)
        return out

    def sample(self, i: int) -> Sample:
        k, j = self.locate(i)
        part = self.parts[k]
        row = part.source.read(j)
        if row.error is not None:
            raise UnusableSample(f"{row.shard} sample {row.index}: {row.error}")
        sample, problems = parse_row(
            row.value, part.source.fields, source=row.shard, index=row.index
        )
        errors = [p for p in problems if p.severity == "error"]
        if sample is None or errors:
            why = errors[0].message if errors else "unreadable"
            if part.indexed:
                raise UserError(
                    f"{row.shard} sample {row.index} changed since it was indexed: {why}"
                )
            raise UnusableSample(f"{row.shard} sample {row.index}: {why}")
        return sample

    def load_media(self, i: int, sample: Sample) -> tuple[list[Any], list[np.ndarray]]:
        """Decoded images and sampled video frames of the sample at mixture position `i`."""
        k, _ = self.locate(i)
        root, entry, m = self._roots[k], self.parts[k].dataset.entry, self.media
        images = [
            load_image(root.locate(ref), m.max_pixels, m.pad_background) for ref in sample.images
        ]
        explicit = sample.num_frames or entry.num_frames
        frames = explicit or m.num_frames
        fps = None if explicit else m.fps
        videos = [load_video(root.locate(ref), frames, fps, m.max_frames) for ref in sample.videos]
        return images, videos

    def _encode(self, i: int) -> Encoded | None:
        k, _ = self.locate(i)
        try:
            sample = self.sample(i)
            images, videos = self.load_media(i, sample)
        except MediaError as e:
            if self.parts[k].indexed:
                raise UserError(
                    f"{sample.source} sample {sample.index}: {e.message}",
                    hint=e.hint or "run `vlaunch data check --decode` on the dataset",
                ) from None
            self._unusable(i, f"{sample.source} sample {sample.index}: {e.message}")
            return None
        except UnusableSample as e:
            self._unusable(i, str(e))
            return None
        return self.encoder.encode(sample, images, videos)

    def _unusable(self, i: int, why: str) -> None:
        if not self.substitute_dropped:
            raise UserError(why, hint="run `vlaunch data check` on the dataset")
        key = self.locate(i)
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%s; skipped (the next sample takes its place)", why)

    def __getitem__(self, i: int) -> Encoded | None:
        enc = self._encode(i)
        if enc is not None or not self.substitute_dropped:
            return enc
        # Keep micro-batches full (and DDP ranks in step): the next sample takes its place.
        for step in range(1, MAX_SUBSTITUTIONS + 1):
            enc = self._encode((i + step) % self._len)
            if enc is not None:
                enc.substituted = True
                return enc
        raise UserError(
            f"{MAX_SUBSTITUTIONS} samples in a row after mixture position {i} are over "
            f"data.max_length={self.encoder.max_length} or unreadable, and dropped",
            hint="raise data.max_length or use data.overlength=truncate_text "
            "(`vlaunch data check JOB.yaml` shows the token lengths and bad samples)",
        )


def _source_lengths(source: Source, ds: Dataset) -> array:
    """Words per record, negative for records without media parts in their turns (reading
    only the text where the source allows, `Source.text_rows`: an estimate for grouping by
    length, as LLaVA's is); unreadable records count as one word."""
    out = array("i")
    for row in source.text_rows():
        if row.value is None and (row.index < 0 or row.fatal):
            continue  # a shard-level problem, not a record
        sample = None
        if isinstance(row.value, dict):
            sample, _ = parse_row(row.value, source.fields, source=row.shard, index=row.index)
        if sample is None:
            out.append(1)
            continue
        words = max(1, sample.text_words())
        media = any(t.count("image") or t.count("video") for t in sample.turns)
        out.append(words if media else -words)
    if len(out) != len(source):
        raise UserError(
            f"dataset '{ds.name}': {len(out)} records read for lengths, {len(source)} counted",
            hint="run `vlaunch data check` on it",
        )
    return out
