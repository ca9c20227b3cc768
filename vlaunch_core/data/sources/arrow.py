"""Arrow files: folders written by `datasets`' `save_to_disk` (a `Dataset`, or one split of a
`DatasetDict`), the `datasets` cache, or `.arrow` files, read with pyarrow.

`datasets` stores a dataset as Arrow IPC streams and lists them in `state.json`
(`_data_files`); a `DatasetDict` folder names its splits in `dataset_dict.json`, one folder
each. The files are memory-mapped (as `datasets` itself does): counting touches the batch
headers only, and any record is read without decoding the others, so the training order
needs no locality.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlaunch_core.data.formats import Fields
from vlaunch_core.data.sources.base import Row, Shard, Source, SourceError, media_columns
from vlaunch_core.data.sources.paths import files_of

STREAM_BATCH_ROWS = 64


def arrow_files(data_path: str, split: str | None, name: str) -> list[str]:
    """The Arrow files of a `save_to_disk` folder (of `split` for a DatasetDict), or the
    `.arrow` files a path or pattern names."""
    folder = Path(data_path)
    if (folder / "dataset_dict.json").is_file():
        splits = _json(folder / "dataset_dict.json").get("splits", [])
        chosen = split or "train"
        if chosen not in splits:
            raise SourceError(
                "missing_file",
                str(folder),
                f"no split '{chosen}' in this DatasetDict (splits: {', '.join(splits) or 'none'})",
                hint="set split: on the dataset entry",
            )
        folder = folder / chosen
    if (folder / "state.json").is_file():
        files = [f["filename"] for f in _json(folder / "state.json").get("_data_files", [])]
        paths = [str(folder / f) for f in files]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing or not paths:
            raise SourceError(
                "missing_file", missing[0] if missing else str(folder), "Arrow file not found"
            )
        return paths
    return files_of(data_path, ".arrow", f"Arrow data of '{name}'")


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SourceError("missing_file", str(path), f"unreadable ({e})") from e
    return value if isinstance(value, dict) else {}


def read_arrow_table(path: str) -> Any:
    """A memory-mapped table of an Arrow IPC stream (what `datasets` writes) or file."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow comes with the lock
        raise SourceError(
            "missing_file", path, "reading Arrow datasets needs pyarrow", hint="pip install pyarrow"
        ) from None
    try:
        source = pa.memory_map(path)
    except OSError as e:
        raise SourceError("missing_file", path, f"cannot open ({e})") from e
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
    try:
        return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid as e:
        raise SourceError("missing_file", path, f"not an Arrow file ({e})") from e


class ArrowSource(Source):
    kind = "arrow"

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
            list(data_path) if isinstance(data_path, list) else arrow_files(data_path, split, name)
        )
        self._shards: list[Shard] | None = None
        self._cache_tables: dict[int, Any] = {}

    def _table(self, k: int) -> Any:
        if self._fresh():
            self._cache_tables = {}
        table = self._cache_tables.get(k)
        if table is None:
            table = self._cache_tables[k] = read_arrow_table(self.files[k])
        return table

    def shards(self) -> Sequence[Shard]:
        if self._shards is None:
            self._shards = [Shard(p, self._table(k).num_rows) for k, p in enumerate(self.files)]
        return self._shards

    def rows(self) -> Iterator[Row]:
        yield from self._stream(None)

    def text_rows(self) -> Iterator[Row]:
        yield from self._stream("text")

    def _stream(self, only: str | None) -> Iterator[Row]:
        for k, path in enumerate(self.files):
            table = self._table(k)
            if only == "text":
                media = media_columns(table.column_names, self.fields)
                table = table.select([c for c in table.column_names if c not in media])
            size = _file_size(path) // max(1, table.num_rows)
            index = 0
            for batch in table.to_batches(max_chunksize=STREAM_BATCH_ROWS):
                for value in batch.to_pylist():
                    yield Row(path, index, value, nbytes=size)
                    index += 1

    def read(self, j: int) -> Row:
        k, i = self.locate(j)
        return Row(self.files[k], i, self._table(k).slice(i, 1).to_pylist()[0])


def _file_size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0
