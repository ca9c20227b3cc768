"""Dataset sources by kind, imported on first use (torchx's scheduler registry shape).

| kind | what `data_path` is | reader | access |
| --- | --- | --- | --- |
| `json` | a JSON array or JSON Lines file | `jsonstream` | indexable (byte spans) |
| `parquet` | a `.parquet` file, a folder or pattern of them | pyarrow | indexable (row groups) |
| `arrow` | a `save_to_disk` folder, `.arrow` files | pyarrow (memory-mapped) | indexable |
| `webdataset` | `.tar` shards, a folder, a brace pattern, a wids index | tarfile | sequential |
| `hf` | a Hugging Face dataset id | resolved to Parquet/Arrow files by a `HubResolver` | - |

`hf` needs the `datasets` library, which the torch-free core does not import: callers that
may meet hub ids pass a resolver (`trainer.data.hub.resolve_hub`), which finds the dataset's
files in the local Hugging Face cache and returns them as a `parquet` or `arrow` source.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from vlaunch_core.data.formats import Fields
from vlaunch_core.data.sources.base import Row, Shard, Source, SourceError
from vlaunch_core.data.sources.paths import detect_kind
from vlaunch_core.errors import did_you_mean

if TYPE_CHECKING:
    from vlaunch_core.data.registry import Dataset
    from vlaunch_core.spec import DatasetEntry

#: kind -> "module:Class"; imported only when a dataset of that kind is opened.
SOURCES: dict[str, str] = {
    "json": "vlaunch_core.data.sources.jsonfile:JsonSource",
    "parquet": "vlaunch_core.data.sources.parquet:ParquetSource",
    "arrow": "vlaunch_core.data.sources.arrow:ArrowSource",
    "webdataset": "vlaunch_core.data.sources.tar:TarSource",
}


@dataclass(frozen=True)
class ResolvedHub:
    """The local files of a hub dataset's split."""

    kind: str
    """`parquet` or `arrow`."""
    files: list[str]
    root: str
    """The local snapshot folder (the media root of path-referenced media)."""
    description: str
    """Where the files were found, for logs and messages."""


class HubResolver(Protocol):
    def __call__(self, entry: DatasetEntry) -> ResolvedHub: ...


def source_class(kind: str) -> type[Source]:
    """The source class of a kind, imported now; an unknown kind lists the known ones."""
    target = SOURCES.get(kind)
    if target is None:
        raise SourceError(
            "missing_file",
            kind,
            f"unknown source kind '{kind}'.{did_you_mean(kind, SOURCES)}",
            hint=f"known: {', '.join([*SOURCES, 'hf'])}",
        )
    module, _, name = target.partition(":")
    cls: type[Source] = getattr(importlib.import_module(module), name)
    return cls


def source_kind(entry: DatasetEntry) -> str:
    """The entry's `source`, or the kind detected from its `data_path`."""
    return entry.source if entry.source != "auto" else detect_kind(entry.data_path)


def entry_fields(entry: DatasetEntry) -> Fields:
    return Fields(entry.format, entry.text_field, entry.image_field, entry.video_field)


def open_source(ds: Dataset, hub: HubResolver | None = None) -> Source:
    """The source of a registry dataset. Raises `SourceError` when it cannot be opened (a
    missing file, a hub id without a resolver or not in the cache)."""
    entry = ds.entry
    kind = source_kind(entry)
    fields = entry_fields(entry)
    if kind == "hf":
        if hub is None:
            raise SourceError(
                "missing_file",
                entry.data_path,
                "a Hugging Face dataset id is resolved by the training stack (`datasets`)",
                hint="install the training stack (pip install -e '.[train]')",
            )
        found = hub(entry)
        root = Path(entry.media_dir) if entry.media_dir is not None else Path(found.root)
        return source_class(found.kind)(ds.name, found.files, fields, root)
    return source_class(kind)(ds.name, entry.data_path, fields, ds.media_dir, entry.split)


__all__ = [
    "SOURCES",
    "HubResolver",
    "ResolvedHub",
    "Row",
    "Shard",
    "Source",
    "SourceError",
    "open_source",
    "source_class",
    "source_kind",
]
