"""JSON array / JSON Lines files (VILA, LLaVA, lmms-finetune, OpenAI messages).

One file is one shard. Counting needs one streaming pass (`jsonstream`), which also records
each record's byte span, so a record is read back with one seek (`read`). The trainer's
index (`trainer.data.dataset.index_dataset`) makes that pass itself, checking every sample,
and hands the spans over (`with_spans`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

from vlaunch_core.data.formats import Fields
from vlaunch_core.data.jsonstream import iter_records, read_record
from vlaunch_core.data.sources.base import Row, Shard, Source, SourceError


class JsonSource(Source):
    kind = "json"

    def __init__(
        self,
        name: str,
        data_path: str | list[str],
        fields: Fields,
        media_root: Path,
        split: str | None = None,
    ) -> None:
        super().__init__(name, data_path, fields, media_root, split)
        if isinstance(data_path, list):
            if len(data_path) != 1:
                raise SourceError("missing_file", name, "a JSON source is one file")
            data_path = data_path[0]
        path = self.path = data_path
        if not Path(path).is_file():
            raise SourceError("missing_file", path, f"dataset file of '{name}' not found")
        self._offsets: array | None = None
        self._sizes: array | None = None

    def with_spans(self, offsets: array, sizes: array) -> JsonSource:
        """Use byte spans recorded by a pass the caller made (no second scan)."""
        self._offsets, self._sizes = offsets, sizes
        return self

    def _spans(self) -> tuple[array, array]:
        if self._offsets is None or self._sizes is None:
            offsets, sizes = array("q"), array("q")
            for rec in iter_records(self.path):
                if rec.error is None:
                    offsets.append(rec.offset)
                    sizes.append(rec.length)
            self._offsets, self._sizes = offsets, sizes
        return self._offsets, self._sizes

    def shards(self) -> Sequence[Shard]:
        return [Shard(self.path, len(self._spans()[0]))]

    def count_at_least(self, limit: int) -> int:
        if self._offsets is not None:
            return len(self._offsets)
        count = 0
        for rec in iter_records(self.path):
            count += rec.error is None
            if count >= limit or rec.fatal:
                break
        return count

    def rows(self) -> Iterator[Row]:
        done = 0
        for rec in iter_records(self.path):
            end = rec.offset + rec.length
            nbytes, done = max(0, end - done), max(done, end)
            if rec.error is not None:
                message = rec.error
                if rec.fatal:
                    message = f"{rec.error}; the rest of the file cannot be read"
                yield Row(self.path, rec.index, None, message, "invalid_json", rec.fatal, nbytes)
            else:
                yield Row(self.path, rec.index, rec.value, nbytes=nbytes)

    def read(self, j: int) -> Row:
        offsets, sizes = self._spans()
        return Row(self.path, j, read_record(self.path, offsets[j], sizes[j]))

    def where(self, j: int) -> tuple[str, int]:
        return self.path, j
