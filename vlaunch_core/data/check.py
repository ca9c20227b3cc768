"""`vlaunch data check`: every problem of a dataset or mixture, in one streaming pass.

Every source kind is read through its `Source` (`vlaunch_core.data.sources`): JSON files,
Parquet, Arrow (`save_to_disk`), WebDataset tar shards, and hub datasets once resolved to
their files. Each sample is parsed, its media paths are resolved under the media root (or
its embedded bytes taken) and opened far enough to read their headers (`decode=True`
decodes every image and samples every video), ids are checked for duplicates within a
dataset, and, when a token counter is given (the job's model processor), its token length
is compared with `data.max_length`. Without a model, a sample whose text alone is certainly
over `data.max_length` (more bytes than `MAX_BYTES_PER_TOKEN` x the limit) is flagged.
Problems name the shard file and the 0-based row in it. When samples lack the conversation
column and other columns look like one, a single `column_mapping` problem suggests the
`text_field` / `image_field` / `video_field` to set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from vlaunch_core.data.formats import (
    Fields,
    Format,
    Media,
    Sample,
    parse_row,
    suggest_fields,
    turn_style,
)
from vlaunch_core.data.media import (
    MediaError,
    MediaRoot,
    VideoInfo,
    frame_count,
    load_image,
    load_video,
    probe_image,
    probe_video,
)
from vlaunch_core.data.mixture import MixtureItem
from vlaunch_core.data.problems import DataProblem
from vlaunch_core.data.registry import Dataset
from vlaunch_core.data.sources import HubResolver, Source, SourceError, open_source

COUNT_BATCH = 256
#: No token of any tokenizer vlaunch supports is longer than this many UTF-8 bytes, so a
#: text of B bytes has at least B / 64 tokens: the no-model overlength check flags only
#: samples that are certainly too long (real text averages 3-5 bytes a token).
MAX_BYTES_PER_TOKEN = 64


@dataclass(frozen=True)
class CheckSource:
    """One dataset to check: where it is, its media root and its columns."""

    name: str
    data_path: Path | str
    media_root: Path | None
    """None: a hub dataset's own folder."""
    fmt: Format = "auto"
    text_field: str | None = None
    image_field: str | None = None
    num_frames: int | None = None
    repeat: int = 1
    video_field: str | None = None
    kind: str = "auto"
    """The entry's `source` (auto: detected from the path)."""
    split: str | None = None
    config_name: str | None = None
    revision: str | None = None

    @property
    def fields(self) -> Fields:
        return Fields(self.fmt, self.text_field, self.image_field, self.video_field)

    def dataset(self) -> Dataset:
        """As a registry dataset (what `open_source` takes)."""
        from vlaunch_core.spec import DatasetEntry

        entry = DatasetEntry.model_validate(
            {
                "data_path": str(self.data_path),
                "media_dir": None if self.media_root is None else str(self.media_root),
                "source": self.kind,
                "format": self.fmt,
                "text_field": self.text_field,
                "image_field": self.image_field,
                "video_field": self.video_field,
                "split": self.split,
                "config_name": self.config_name,
                "revision": self.revision,
            }
        )
        return Dataset(self.name, entry, "data check")


def sources_from_mixture(items: Sequence[MixtureItem]) -> list[CheckSource]:
    """One source per distinct dataset of a mixture (repeats summed, each file read once)."""
    out: dict[str, CheckSource] = {}
    for item in items:
        ds, e = item.dataset, item.dataset.entry
        if ds.name in out:
            prev = out[ds.name]
            out[ds.name] = replace(prev, repeat=prev.repeat + item.repeat)
            continue
        hub = e.source == "hf" and e.media_dir is None
        out[ds.name] = CheckSource(
            ds.name,
            e.data_path,
            None if hub else ds.media_dir,
            e.format,
            e.text_field,
            e.image_field,
            e.num_frames,
            item.repeat,
            e.video_field,
            e.source,
            e.split,
            e.config_name,
            e.revision,
        )
    return list(out.values())


@dataclass(frozen=True)
class CheckOptions:
    decode: bool = False
    max_pixels: int = 89_478_485
    max_length: int | None = None
    overlength: str = "truncate_text"
    num_frames: int = 8
    fps: float | None = None
    max_frames: int = 64
    system_prompt: str | None = None
    videos_supported: bool = True
    """False when the model family takes neither videos nor several images (video frames)."""
    max_images: int | None = None
    """Images per sample the model family takes (None: any number)."""


@dataclass(frozen=True)
class LengthQuery:
    """What a token counter needs: the sample and the sizes of its media."""

    sample: Sample
    image_sizes: list[tuple[int, int]]
    videos: list[tuple[int, int, int]]
    """(frames sampled, width, height) per video."""


@dataclass(frozen=True)
class LengthCount:
    tokens: int
    shortest: int | None = None
    """Tokens that truncation must keep (the first exchange up to the answer's first token);
    only computed for samples over the limit."""


class LengthCounter(Protocol):
    """Counts the tokens of samples as the model's processor would (`trainer.data.lengths`)."""

    name: str

    def count(
        self, queries: Sequence[LengthQuery], max_length: int | None
    ) -> list[LengthCount]: ...


@dataclass
class DatasetStats:
    name: str
    file: str
    repeat: int
    samples: int = 0
    images: int = 0
    videos: int = 0
    problems: int = 0


@dataclass
class CheckReport:
    problems: list[DataProblem] = field(default_factory=list)
    datasets: list[DatasetStats] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    model: str | None = None
    options: CheckOptions = field(default_factory=CheckOptions)
    would_truncate: int = 0
    would_drop: int = 0
    seconds: float = 0.0

    @property
    def errors(self) -> list[DataProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> dict[str, Any]:
        by_kind: dict[str, int] = {}
        for p in self.problems:
            by_kind[p.kind] = by_kind.get(p.kind, 0) + 1
        bad = {(p.file, p.index) for p in self.errors if p.index >= 0}
        tokens = None
        if self.lengths:
            ordered = sorted(self.lengths)
            tokens = {
                "counted": len(ordered),
                "model": self.model,
                **{f"p{q}": percentile(ordered, q) for q in (50, 90, 99)},
                "max": ordered[-1],
            }
        return {
            "samples": sum(d.samples for d in self.datasets),
            "samples_in_mixture": sum(d.samples * d.repeat for d in self.datasets),
            "images": sum(d.images for d in self.datasets),
            "videos": sum(d.videos for d in self.datasets),
            "samples_with_errors": len(bad),
            "errors": len(self.errors),
            "warnings": len(self.problems) - len(self.errors),
            "problems_by_kind": by_kind,
            "tokens": tokens,
            "max_length": self.options.max_length,
            "overlength": self.options.overlength,
            "would_truncate": self.would_truncate,
            "would_drop": self.would_drop,
            "decoded": self.options.decode,
            "datasets": [d.__dict__ for d in self.datasets],
            "seconds": round(self.seconds, 2),
        }

    def to_json(self) -> dict[str, Any]:
        return {"problems": [p.to_json() for p in self.problems], "summary": self.summary()}


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of sorted values."""
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return int(ordered[k])


Progress = Callable[[int], None]
"""Called with the number of bytes of the current file just read."""


def check_sources(
    sources: Sequence[CheckSource],
    options: CheckOptions,
    counter: LengthCounter | None = None,
    progress: Progress | None = None,
    hub: HubResolver | None = None,
) -> CheckReport:
    """Check every sample of every source; never raises on bad data. `hub` resolves
    Hugging Face dataset ids (`trainer.data.hub.resolve_hub`)."""
    start = time.perf_counter()
    report = CheckReport(model=counter.name if counter else None, options=options)
    for src in sources:
        stats = DatasetStats(src.name, str(src.data_path), src.repeat)
        report.datasets.append(stats)
        before = len(report.problems)
        try:
            source = open_source(src.dataset(), hub)
        except SourceError as e:
            report.problems.append(DataProblem(e.kind, e.where, -1, _open_error(src, e)))
        else:
            _check_source(src, source, options, counter, report, stats, progress)
            if stats.samples == 0:
                report.problems.append(
                    DataProblem(
                        "empty_dataset",
                        str(src.data_path),
                        -1,
                        f"dataset '{src.name}' holds no samples",
                    )
                )
        stats.problems = len(report.problems) - before
    _nothing_left(report)
    report.seconds = time.perf_counter() - start
    return report


def _nothing_left(report: CheckReport) -> None:
    """An error when no sample survives: every one has an error or would be dropped (an OK
    here used to mean a training that stops at its first step)."""
    total = sum(d.samples for d in report.datasets)
    bad = {(p.file, p.index) for p in report.errors if p.index >= 0}
    usable = total - len(bad) - report.would_drop
    if total > 0 and usable <= 0:
        report.problems.append(
            DataProblem(
                "nothing_to_train",
                ", ".join(d.file for d in report.datasets),
                -1,
                f"none of the {total} samples is usable: {len(bad)} with errors, "
                f"{report.would_drop} dropped as longer than "
                f"data.max_length={report.options.max_length}",
            )
        )


def _open_error(src: CheckSource, e: SourceError) -> str:
    if e.kind == "missing_file" and e.where == str(src.data_path) and "not found" in e.detail:
        return f"dataset file of '{src.name}' not found"
    return e.detail + (f" ({e.hint})" if e.hint else "")


def open_check_source(src: CheckSource, hub: HubResolver | None = None) -> Source:
    """The source `check_sources` reads (for progress totals)."""
    return open_source(src.dataset(), hub)


@dataclass
class _Unmapped:
    """Samples without the conversation column whose other columns look like one."""

    count: int = 0
    first: tuple[str, int] = ("", -1)
    keys: list[str] = field(default_factory=list)
    suggestion: dict[str, str] = field(default_factory=dict)


def _check_source(
    src: CheckSource,
    source: Source,
    options: CheckOptions,
    counter: LengthCounter | None,
    report: CheckReport,
    stats: DatasetStats,
    progress: Progress | None,
) -> None:
    root = MediaRoot(source.media_root)
    fields = src.fields
    seen: dict[str, tuple[str, int]] = {}
    pending: list[LengthQuery] = []
    unmapped = _Unmapped()
    for row in source.rows():
        if progress is not None:
            progress(row.nbytes)
        if row.error is not None:
            stats.samples += row.index >= 0 and row.error_kind != "missing_file"
            report.problems.append(DataProblem(row.error_kind, row.shard, row.index, row.error))
            continue
        stats.samples += 1
        if isinstance(row.value, dict) and turn_style(row.value, fields) is None:
            suggestion = suggest_fields(row.value, fields)
            if suggestion:
                if not unmapped.count:
                    unmapped.first = (row.shard, row.index)
                    unmapped.keys = sorted(map(str, row.value))[:8]
                    unmapped.suggestion = suggestion
                unmapped.count += 1
                continue
        sample, parsed = parse_row(row.value, fields, source=row.shard, index=row.index)
        report.problems += parsed
        if sample is None:
            continue
        stats.images += len(sample.images)
        stats.videos += len(sample.videos)
        problems = list(parsed)
        if sample.id is not None:
            if sample.id in seen:
                shard, index = seen[sample.id]
                also = f"sample {index}" if shard == row.shard else f"{shard} sample {index}"
                problems.append(
                    DataProblem(
                        "duplicate_id", row.shard, row.index, f"id '{sample.id}' is also {also}"
                    )
                )
            else:
                seen[sample.id] = (row.shard, row.index)
        sizes, videos = _check_media(sample, src, root, options, problems)
        problems += _model_problems(sample, options)
        if counter is None:
            problems += _bound_problems(sample, options, report)
        report.problems += problems[len(parsed) :]
        if counter is not None and not any(p.severity == "error" for p in problems):
            pending.append(LengthQuery(sample, sizes, videos))
            if len(pending) >= COUNT_BATCH:
                _count(pending, counter, options, report)
                pending = []
    if pending and counter is not None:
        _count(pending, counter, options, report)
    if unmapped.count:
        report.problems.append(_mapping_problem(src, unmapped, stats.samples))


def _mapping_problem(src: CheckSource, u: _Unmapped, samples: int) -> DataProblem:
    fields = src.fields
    wanted = fields.text or (
        "conversations' or 'messages" if fields.fmt == "auto" else fields.columns(fields.fmt)[0]
    )
    keys = ", ".join(u.keys)
    setting = ", ".join(f"{k}: {v}" for k, v in u.suggestion.items())
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in u.suggestion.items())
    shard, index = u.first
    return DataProblem(
        "column_mapping",
        shard,
        index,
        f"{u.count} of {samples} samples have no '{wanted}' column (columns: {keys}); "
        f"they look like the mapping {setting}: set it on dataset '{src.name}' "
        f"(or `vlaunch data check FILE {flags}`)",
    )


def _bound_problems(
    sample: Sample, options: CheckOptions, report: CheckReport
) -> list[DataProblem]:
    """`too_long` for a sample whose text alone is certainly over `max_length` tokens."""
    limit = options.max_length
    if limit is None:
        return []
    nbytes = sum(len(p.text.encode("utf-8")) for t in sample.turns for p in t.parts)
    nbytes += len((sample.system_prompt or options.system_prompt or "").encode("utf-8"))
    media = len(sample.images) + len(sample.videos)  # at least one token each
    least = -(-nbytes // MAX_BYTES_PER_TOKEN) + media
    if least <= limit:
        return []
    severity = "error" if options.overlength == "error" else "warning"
    if options.overlength == "drop":
        report.would_drop += 1
        what = "would be dropped"
    elif options.overlength == "truncate_text":
        what = "would be truncated or dropped"
    else:
        what = "stops training (data.overlength: error)"
    return [
        DataProblem(
            "too_long",
            sample.source,
            sample.index,
            f"at least {least} tokens ({nbytes} bytes of text, no token is longer than "
            f"{MAX_BYTES_PER_TOKEN} bytes) > data.max_length={limit}: {what} "
            "(give --model for exact counts)",
            severity,
        )
    ]


def _check_media(
    sample: Sample,
    src: CheckSource,
    root: MediaRoot,
    options: CheckOptions,
    problems: list[DataProblem],
) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    sizes: list[tuple[int, int]] = []
    videos: list[tuple[int, int, int]] = []
    file, index = sample.source, sample.index
    for k, name in enumerate(sample.images):
        try:
            path = root.locate(name)
            if options.decode:
                sizes.append(load_image(path, options.max_pixels).size)
            else:
                sizes.append(probe_image(path, options.max_pixels))
        except MediaError as e:
            problems.append(
                DataProblem(e.kind, file, index, f"image {k} {_named(name)}: {e.detail}")
            )
    n_frames = sample.num_frames or src.num_frames or options.num_frames
    fps = None if (sample.num_frames or src.num_frames) else options.fps
    for k, name in enumerate(sample.videos):
        try:
            path = root.locate(name)
            info = probe_video(path)
            n = frame_count(info, n_frames, fps, options.max_frames)
            if options.decode:
                frames = load_video(path, n_frames, fps, options.max_frames)
                info = VideoInfo(frames.shape[2], frames.shape[1], info.duration, info.frames)
            videos.append((n, info.width, info.height))
        except MediaError as e:
            problems.append(
                DataProblem(e.kind, file, index, f"video {k} {_named(name)}: {e.detail}")
            )
    return sizes, videos


def _named(ref: Media) -> str:
    return f"'{ref}'" if isinstance(ref, str) else f"({ref})"


def _model_problems(sample: Sample, options: CheckOptions) -> list[DataProblem]:
    out = []
    if sample.videos and not options.videos_supported:
        out.append(
            DataProblem(
                "unsupported_media",
                sample.source,
                sample.index,
                f"{len(sample.videos)} video(s), but the model takes neither "
                "videos nor several images",
            )
        )
    if options.max_images is not None and len(sample.images) > options.max_images:
        out.append(
            DataProblem(
                "unsupported_media",
                sample.source,
                sample.index,
                f"{len(sample.images)} images, but the model takes "
                f"{options.max_images}: the others are left out",
                "warning",
            )
        )
    return out


def _count(
    queries: list[LengthQuery],
    counter: LengthCounter,
    options: CheckOptions,
    report: CheckReport,
) -> None:
    limit = options.max_length
    for q, n in zip(queries, counter.count(queries, limit), strict=True):
        report.lengths.append(n.tokens)
        if limit is None or n.tokens <= limit:
            continue
        fixable = n.shortest is not None and n.shortest <= limit
        if options.overlength == "error":
            what, severity = "stops training (data.overlength: error)", "error"
        elif options.overlength == "drop" or not fixable:
            what, severity = "would be dropped", "warning"
            report.would_drop += 1
        else:
            what, severity = "would be truncated (trailing turns or text cut)", "warning"
            report.would_truncate += 1
        report.problems.append(
            DataProblem(
                "too_long",
                q.sample.source,
                q.sample.index,
                f"{n.tokens} tokens > data.max_length={limit}: {what}",
                severity,
            )
        )
