"""WebDataset tar shards: `.tar` files, folders of them, brace patterns
(`train-{0000..0099}.tar`), or a wids shard index (`{"shardlist": [{"url", "nsamples"}]}`).

A sample is the run of consecutive members sharing a key, WebDataset's rule
(`webdataset.tariterators.base_plus_ext`: the key is the member name up to the first dot of
its base name, the rest is the extension): `000042.json` holds the record (VILA or messages),
`000042.jpg`, `000042.1.png`, `000042.mp4` its embedded media. A record names a member by
its extension (`"image": "jpg"`, `"images": ["0.jpg", "1.png"]`) or a file under the media
root by path; without any media column, the sample's image and video members are its media
in extension order. `image_field: jpg` takes the member itself as the image column.

Reading uses the standard library's `tarfile` on a seekable file, as `webdataset` does: a
shard's member headers are scanned once per process that opens it (512 bytes a member, the
data is seeked over), then a sample is one seek and one read per member. So a rank opens
only the shards its samples are in and reads only its own samples' bytes. `webdataset`'s
own readers are not used here: they stream whole shards (mode `r|*`), and importing the
package imports torch, which the core does not (the tests read our shards with `webdataset`
and `webdataset`'s with ours). Sample counts come from the wids index when given, else from
the header scan (bounded work: headers only).
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vlaunch_core.data.formats import Embedded, Fields, turn_style
from vlaunch_core.data.sources.base import Row, Shard, Source, SourceError
from vlaunch_core.data.sources.paths import files_of

#: `webdataset.tariterators.base_plus_ext`
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_META = re.compile(r"__[^/]*__($|/)")
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
VIDEO_EXTENSIONS = frozenset({"mp4", "webm", "mkv", "avi", "mov", "m4v"})
CACHED_SHARDS = 2


@dataclass
class ShardIndex:
    """Where every sample of one shard is: its key and (extension, data offset, size) of
    each member."""

    keys: list[str] = field(default_factory=list)
    members: list[list[tuple[str, int, int]]] = field(default_factory=list)
    error: str | None = None
    """Why the scan stopped early (a truncated or corrupt shard)."""

    def __len__(self) -> int:
        return len(self.keys)


def split_name(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name, WebDataset's rule; None for names without one."""
    m = _KEY.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


def scan_shard(path: str) -> ShardIndex:
    """Read the member headers of one shard (seeking over the data)."""
    index = ShardIndex()
    size = os.path.getsize(path)
    try:
        with tarfile.open(path, "r:") as tf:
            while True:
                info = tf.next()
                if info is None:
                    break
                tf.members = []  # type: ignore[attr-defined]  # the index below is enough
                if not info.isreg() or _META.match(info.name):
                    continue
                parts = split_name(info.name)
                if parts is None:
                    continue
                key, ext = parts
                if info.offset_data + info.size > size:
                    if index.keys and index.keys[-1] == key:  # that sample is incomplete
                        index.keys.pop()
                        index.members.pop()
                    index.error = f"member {info.name} is cut short: the shard is truncated"
                    break
                if not index.keys or index.keys[-1] != key:
                    index.keys.append(key)
                    index.members.append([])
                index.members[-1].append((ext, info.offset_data, info.size))
    except (tarfile.TarError, EOFError) as e:
        index.error = f"not a readable tar file after {len(index.keys)} samples ({e})"
    return index


def _final_extension(ext: str) -> str:
    return ext.rsplit(".", 1)[-1]


def tar_record(key: str, members: dict[str, bytes], fields: Fields) -> tuple[Any, str | None, str]:
    """The record of one sample: (value, error, problem kind)."""
    raw = members.get("json")
    if raw is None:
        names = ", ".join(sorted(members)) or "none"
        return None, f"sample '{key}' has no .json member (members: {names})", "invalid_sample"
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, f"sample '{key}': {key}.json is not JSON ({e})", "invalid_json"
    if not isinstance(value, dict):
        return None, f"sample '{key}': {key}.json must hold an object", "invalid_sample"
    media = {ext: Embedded(data, f"{key}.{ext}") for ext, data in members.items() if ext != "json"}
    for column in {fields.image, fields.video, "image", "images", "video", "videos"} - {None}:
        assert column is not None
        cell = value.get(column)
        if isinstance(cell, str) and cell in media:
            value[column] = media[cell]
        elif isinstance(cell, list):
            value[column] = [media.get(x, x) if isinstance(x, str) else x for x in cell]
        elif cell is None and column in (fields.image, fields.video) and column in media:
            value[column] = media[column]  # image_field: jpg names the member itself
    style = turn_style(value, fields)
    if style is not None:
        _, image_column, video_column = fields.columns(style)
        for column, kinds in ((image_column, IMAGE_EXTENSIONS), (video_column, VIDEO_EXTENSIONS)):
            if column in value:
                continue
            found = [media[e] for e in sorted(media) if _final_extension(e) in kinds]
            if found:
                value[column] = found
    value.setdefault("__key__", key)
    return value, None, "invalid_sample"


class TarSource(Source):
    kind = "webdataset"
    access = "sequential"
    shuffle_within_blocks = False

    def __init__(
        self,
        name: str,
        data_path: str | list[str],
        fields: Fields,
        media_root: Path,
        split: str | None = None,
    ) -> None:
        super().__init__(name, data_path, fields, media_root, split)
        self.counts: list[int] | None = None
        if isinstance(data_path, list):
            self.files = list(data_path)
        elif data_path.lower().endswith(".json") and Path(data_path).is_file():
            self.files, self.counts = _wids_index(data_path)
        else:
            self.files = files_of(data_path, ".tar", f"tar shards of '{name}'")
        self._shards: list[Shard] | None = None
        self._cache_index: OrderedDict[int, ShardIndex] = OrderedDict()
        self._cache_open: OrderedDict[int, IO[bytes]] = OrderedDict()
        self.opened: set[str] = set()
        """Shards this process has read from (tests check that a rank opens few)."""

    # ---------------------------------------------------------------- counting

    def _index(self, k: int) -> ShardIndex:
        if self._fresh():
            self._cache_index, self._cache_open, self.opened = OrderedDict(), OrderedDict(), set()
        index = self._cache_index.get(k)
        if index is None:
            if not Path(self.files[k]).is_file():
                raise SourceError("missing_file", self.files[k], "tar shard not found")
            index = self._cache_index[k] = scan_shard(self.files[k])
            while len(self._cache_index) > CACHED_SHARDS:
                self._cache_index.popitem(last=False)
        else:
            self._cache_index.move_to_end(k)
        return index

    def shards(self) -> Sequence[Shard]:
        if self._shards is None:
            counts = self.counts or [len(self._index(k)) for k in range(len(self.files))]
            self._shards = [Shard(p, n) for p, n in zip(self.files, counts, strict=True)]
        return self._shards

    def count_at_least(self, limit: int) -> int:
        if self.counts is not None or self._shards is not None:
            return len(self)
        total = 0
        for k in range(len(self.files)):
            total += len(self._index(k))
            if total >= limit:
                break
        return total

    def blocks(self) -> list[int] | None:
        return [s.rows for s in self.shards()]

    # ---------------------------------------------------------------- reading

    def _file(self, k: int) -> IO[bytes]:
        f = self._cache_open.get(k)
        if f is None:
            f = self._cache_open[k] = open(self.files[k], "rb")  # noqa: SIM115 - kept open
            self.opened.add(self.files[k])
            while len(self._cache_open) > CACHED_SHARDS:
                self._cache_open.popitem(last=False)[1].close()
        else:
            self._cache_open.move_to_end(k)
        return f

    def _sample(self, k: int, i: int, index: ShardIndex) -> Row:
        f = self._file(k)
        members: dict[str, bytes] = {}
        nbytes = 0
        for ext, offset, size in index.members[i]:
            f.seek(offset)
            members[ext] = f.read(size)
            nbytes += size + 512
        value, error, kind = tar_record(index.keys[i], members, self.fields)
        return Row(self.files[k], i, value, error, kind, nbytes=nbytes)

    def rows(self) -> Iterator[Row]:
        for k, path in enumerate(self.files):
            try:
                index = self._index(k)
            except SourceError as e:
                yield Row(path, -1, None, e.detail, "missing_file", fatal=True)
                continue
            for i in range(len(index)):
                yield self._sample(k, i, index)
            if index.error is not None:
                yield Row(path, len(index), None, index.error, "invalid_sample", fatal=True)
            if self.counts is not None and self.counts[k] != len(index):
                yield Row(
                    path,
                    -1,
                    None,
                    f"the shard index says {self.counts[k]} samples, the shard has {len(index)}",
                    "invalid_sample",
                )

    def read(self, j: int) -> Row:
        k, i = self.locate(j)
        index = self._index(k)
        if i >= len(index):
            return Row(self.files[k], i, None, f"no sample {i}: {index.error}", fatal=True)
        return self._sample(k, i, index)

    def close(self) -> None:
        for f in self._cache_open.values():
            f.close()
        self._cache_open.clear()


def _wids_index(path: str) -> tuple[list[str], list[int]]:
    """Shard files and sample counts of a wids shard index (`shardlist` of `url`, `nsamples`;
    urls relative to the index file)."""
    try:
        raw = json.loads(Path(path).read_text())
        entries = raw["shardlist"]
        files = [str(Path(path).parent / e["url"]) for e in entries]
        counts = [int(e["nsamples"]) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SourceError(
            "missing_file",
            path,
            f"not a wids shard index ({e})",
            hint='a JSON object {"shardlist": [{"url": "shard-0000.tar", "nsamples": 1000}, ...]}',
        ) from e
    return files, counts


def write_wids_index(path: Path, shards: Sequence[tuple[str, int]], name: str) -> None:
    """Write a wids shard index for `(file relative to path's folder, samples)` pairs."""
    entries = [
        {"url": url, "nsamples": n, "filesize": (path.parent / url).stat().st_size}
        for url, n in shards
    ]
    doc = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": name}
    path.write_text(json.dumps(doc | {"shardlist": entries}, indent=1) + "\n")
