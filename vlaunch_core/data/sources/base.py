"""The source interface: where a dataset's records are and how they are read.

A source turns one dataset entry into records (dicts of columns) without knowing the
conversation format; `formats.parse_row` turns a record into a `Sample`. Every source:

- counts its records per shard with bounded work (`shards()`: a JSON file is scanned once, a
  Parquet file's footer is read, an Arrow file's batch headers, a tar shard's member headers),
- streams all records in storage order for `vlaunch data check` (`rows()`),
- reads record `j` of the concatenation of its shards (`read(j)`), for the trainer.

`access` says how reading one record costs: `indexable` sources (JSON, Parquet, Arrow) read
any record directly; `sequential` ones (tar shards) are cheap only in storage order within a
shard. `blocks()` gives the sampler the locality units of a source (Parquet row groups, tar
shards) so that the training order can visit them one after the other
(`vlaunch_core.data.order`).
"""

from __future__ import annotations

import bisect
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, ClassVar, Literal

from vlaunch_core.data.formats import Fields
from vlaunch_core.errors import UserError

Access = Literal["indexable", "sequential"]


class SourceError(UserError):
    """A dataset that cannot be opened at all; `kind` is its problem kind (`missing_file`)."""

    def __init__(self, kind: str, where: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{where}: {message}", hint=hint)
        self.kind = kind
        self.where = where
        self.detail = message


@dataclass(frozen=True)
class Shard:
    """One file of a source and how many records it holds."""

    path: str
    rows: int


@dataclass(frozen=True)
class Row:
    """One record: its columns, or why it could not be read."""

    shard: str
    """The file it is in (a problem's `file`)."""
    index: int
    """Its 0-based position in that file (a problem's sample index)."""
    value: Any = None
    error: str | None = None
    error_kind: str = "invalid_sample"
    fatal: bool = False
    """Nothing after this record can be read from the shard."""
    nbytes: int = 0
    """Bytes of the source this record accounts for (progress bars)."""


class Source(ABC):
    """The records of one dataset entry (see the module docstring)."""

    kind: ClassVar[str]
    access: ClassVar[Access] = "indexable"
    shuffle_within_blocks: ClassVar[bool] = True
    """Whether the training order may visit the records of one block in any order (False:
    in storage order, for sequential sources)."""

    def __init__(
        self,
        name: str,
        data_path: str | list[str],
        fields: Fields,
        media_root: Path,
        split: str | None = None,
    ) -> None:
        """`data_path` as the entry gives it, or the list of files a hub dataset resolved to;
        `split` for sources that hold several (a DatasetDict folder)."""
        self.name = name
        self.fields = fields
        self.media_root = media_root
        self._starts: list[int] | None = None
        self._pid = os.getpid()

    # ---------------------------------------------------------------- counting

    @abstractmethod
    def shards(self) -> Sequence[Shard]:
        """Every file of the source with its record count (bounded work, cached)."""

    def __len__(self) -> int:
        return sum(s.rows for s in self.shards())

    def count_at_least(self, limit: int) -> int:
        """Records, counted until `limit` is reached (a cheap lower bound is enough)."""
        return len(self)

    def total_bytes(self) -> int:
        """Bytes of all shards (progress bars)."""
        return sum(_size(s.path) for s in self.shards())

    def locate(self, j: int) -> tuple[int, int]:
        """(shard number, record index in the shard) of record `j`."""
        if self._starts is None:
            self._starts = [0, *accumulate(s.rows for s in self.shards())]
        if not 0 <= j < self._starts[-1]:
            raise IndexError(j)
        k = bisect.bisect_right(self._starts, j) - 1
        return k, j - self._starts[k]

    def where(self, j: int) -> tuple[str, int]:
        """(shard file, index in it) of record `j`, for messages."""
        k, i = self.locate(j)
        return self.shards()[k].path, i

    def blocks(self) -> list[int] | None:
        """Record counts of the locality blocks, in storage order (None: any order is as
        cheap as any other)."""
        return None

    # ---------------------------------------------------------------- reading

    @abstractmethod
    def rows(self) -> Iterator[Row]:
        """Every record in storage order (`vlaunch data check`)."""

    @abstractmethod
    def read(self, j: int) -> Row:
        """Record `j` of the concatenation of the shards."""

    def text_rows(self) -> Iterator[Row]:
        """Every record without its media columns where that is cheaper (lengths for the
        length-grouped sampler); by default the records themselves."""
        return self.rows()

    # ---------------------------------------------------------------- processes

    def _fresh(self) -> bool:
        """True once per process: a forked data-loader worker must not share open files."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            return True
        return False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in [k for k in state if k.startswith("_cache")]:
            state[key] = type(state[key])()  # open files and decoded blocks stay behind
        return state


def media_columns(columns: Sequence[str], fields: Fields) -> set[str]:
    """The columns that may hold media (left out when only the text is wanted)."""
    named = {fields.image, fields.video, "image", "images", "video", "videos"}
    return {c for c in columns if c in named}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
