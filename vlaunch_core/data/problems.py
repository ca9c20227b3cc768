"""Problems found in a dataset: one kind, one file, one 0-based sample index, one message.

For sharded sources (Parquet files, tar shards) the file is the shard and the index the
0-based row (sample) within it."""

from __future__ import annotations

from dataclasses import dataclass

#: kind -> title, in the order `vlaunch data check` prints the groups.
KINDS: dict[str, str] = {
    "invalid_json": "invalid JSON",
    "invalid_sample": "malformed samples",
    "column_mapping": "columns missing where the dataset entry looks for them",
    "empty_turns": "empty conversations or turns",
    "misordered_turns": "misordered turns",
    "unknown_role": "unknown roles",
    "tag_mismatch": "media tags that do not match the media",
    "media_escape": "media paths escaping their root",
    "missing_media": "missing media files",
    "unreadable_media": "unreadable media files",
    "unsupported_media": "media the model cannot take",
    "too_long": "samples over data.max_length",
    "duplicate_id": "duplicate ids",
    "missing_file": "missing dataset files",
    "empty_dataset": "dataset files without samples",
    "nothing_to_train": "no sample left to train on",
}


@dataclass(frozen=True)
class DataProblem:
    """One problem of one sample (`index` is its 0-based position in `file`; -1: the file)."""

    kind: str
    file: str
    index: int
    message: str
    severity: str = "error"
    """`error`, or `warning` for what the job's policy handles (an overlength sample that
    `data.overlength: truncate_text` shortens)."""

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "kind": self.kind,
            "file": self.file,
            "message": self.message,
            "severity": self.severity,
        }

    def render(self) -> str:
        where = self.file if self.index < 0 else f"{self.file} sample {self.index}"
        return f"{where}: {self.message}"
