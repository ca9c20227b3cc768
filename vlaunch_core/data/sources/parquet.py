"""Parquet files or folders of Parquet shards (`datasets`' `to_parquet`, the Hub's data files),
read with pyarrow.

Counting reads each file's footer only. Records come out as Python dicts; a Hugging Face
`Image` or `Video` cell is `{"bytes": ..., "path": ...}` (embedded when `bytes` is set).
Random access reads the row group that holds a record (a row group is Parquet's smallest
readable unit) and keeps the last few decoded row groups of this process, so the training
order visits row groups one after another (`blocks()`), shuffling the rows within each.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

from vlaunch_core.data.formats import Fields
from vlaunch_core.data.sources.base import Row, Shard, Source, SourceError, media_columns
from vlaunch_core.data.sources.paths import files_of

#: Decoded row groups kept per process (a few: consecutive reads share row groups).
CACHED_ROW_GROUPS = 4
STREAM_BATCH_ROWS = 64


def pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with the lock
        raise SourceError(
            "missing_file",
            "pyarrow",
            "reading Parquet and Arrow datasets needs pyarrow",
            hint="pip install pyarrow (it is in requirements/lock.txt)",
        ) from None
    return pq


class ParquetSource(Source):
    kind = "parquet"

    def __init__(
        self,
        name: str,
        data_path: str | list[str],
        fields: Fields,
        media_root: Path,
        split: str | None = None,
    ) -> None:
        super().__init__(name, data_path, fields, media_root, split)
        self.files = (
            list(data_path)
            if isinstance(data_path, list)
            else files_of(data_path, ".parquet", f"Parquet data of '{name}'")
        )
        self._shards: list[Shard] | None = None
        self._groups: list[list[int]] = []
        self._cache_files: dict[int, Any] = {}
        self._cache_groups: OrderedDict[tuple[int, int], Any] = OrderedDict()

    def _file(self, k: int) -> Any:
        if self._fresh():
            self._cache_files, self._cache_groups = {}, OrderedDict()
        pf = self._cache_files.get(k)
        if pf is None:
            pq = pyarrow_parquet()
            try:
                pf = pq.ParquetFile(self.files[k])
            except OSError as e:
                raise SourceError("missing_file", self.files[k], f"not a Parquet file ({e})") from e
            self._cache_files[k] = pf
        return pf

    def shards(self) -> Sequence[Shard]:
        if self._shards is None:
            shards, groups = [], []
            for k, path in enumerate(self.files):
                meta = self._file(k).metadata
                sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
                groups.append(sizes)
                shards.append(Shard(path, sum(sizes)))
            self._shards, self._groups = shards, groups
        return self._shards

    def blocks(self) -> list[int] | None:
        self.shards()
        return [n for sizes in self._groups for n in sizes if n]

    def columns(self) -> list[str]:
        return list(self._file(0).schema_arrow.names)

    def rows(self) -> Iterator[Row]:
        for k, path in enumerate(self.files):
            yield from self._stream(k, path, None)

    def text_rows(self) -> Iterator[Row]:
        media = media_columns(self.columns(), self.fields)
        keep = [c for c in self.columns() if c not in media]
        for k, path in enumerate(self.files):
            yield from self._stream(k, path, keep)

    def _stream(self, k: int, path: str, columns: list[str] | None) -> Iterator[Row]:
        pf = self._file(k)
        total = max(1, pf.metadata.num_rows)
        size = _file_size(path)
        index = 0
        try:
            for batch in pf.iter_batches(batch_size=STREAM_BATCH_ROWS, columns=columns):
                for value in batch.to_pylist():
                    yield Row(path, index, value, nbytes=size // total)
                    index += 1
        except OSError as e:  # a truncated or corrupt file: report where it stopped
            yield Row(path, index, None, f"cannot read on from here ({e})", fatal=True)

    def read(self, j: int) -> Row:
        k, i = self.locate(j)
        pf = self._file(k)  # first: a forked worker drops what its parent had open
        starts = [0, *accumulate(self._groups[k])]
        g = next(g for g in range(len(self._groups[k])) if starts[g + 1] > i)
        table = self._cache_groups.get((k, g))
        if table is None:
            table = pf.read_row_group(g)
            self._cache_groups[(k, g)] = table
            while len(self._cache_groups) > CACHED_ROW_GROUPS:
                self._cache_groups.popitem(last=False)
        else:
            self._cache_groups.move_to_end((k, g))
        value = table.slice(i - starts[g], 1).to_pylist()[0]
        return Row(self.files[k], i, value)


def _file_size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0
