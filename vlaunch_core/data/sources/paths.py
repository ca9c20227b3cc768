"""Which files a `data_path` names, and which kind of source they are.

A `data_path` is a file, a folder, or a pattern: brace ranges and lists as WebDataset writes
them (`shard-{0000..0099}.tar`, `{a,b}.parquet`, expanded by `braceexpand`, the library
WebDataset uses) and shell globs (`*.parquet`). Expansion is lazy and bounded by the number
of names; nothing is opened here.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from vlaunch_core.data.sources.base import SourceError

JSON_SUFFIXES = (".json", ".jsonl")
#: Files `datasets.Dataset.save_to_disk` and `DatasetDict.save_to_disk` write.
ARROW_MARKERS = ("state.json", "dataset_dict.json", "dataset_info.json")


def is_pattern(path: str) -> bool:
    return any(ch in path for ch in "{*?[")


def expand(path: str) -> list[str]:
    """The files of a brace/glob pattern, in the pattern's order (glob matches sorted)."""
    try:
        import braceexpand
    except ImportError:  # pragma: no cover - braceexpand comes with the lock
        raise SourceError(
            "missing_file",
            path,
            "brace patterns need the braceexpand package",
            hint="pip install braceexpand (it is in requirements/lock.txt)",
        ) from None
    out: list[str] = []
    for name in braceexpand.braceexpand(path):
        if any(ch in name for ch in "*?["):
            out += sorted(glob.glob(name))
        else:
            out.append(name)
    return out


def detect_kind(data_path: str) -> str:
    """`json`, `parquet`, `arrow` or `webdataset` from the path alone (and a folder's
    listing); a missing path is judged by its suffix (json by default)."""
    if is_pattern(data_path):
        for name in expand(data_path)[:1]:
            return _kind_of_suffix(name) or "json"
        return "json"
    p = Path(data_path)
    if p.is_dir():
        if any((p / m).is_file() for m in ARROW_MARKERS):
            return "arrow"
        for suffix, kind in ((".parquet", "parquet"), (".tar", "webdataset"), (".arrow", "arrow")):
            if next(iter(sorted(p.rglob(f"*{suffix}"))), None) is not None:
                return kind
        return "json"
    return _kind_of_suffix(data_path) or "json"


def _kind_of_suffix(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(JSON_SUFFIXES):
        return "json"
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".arrow"):
        return "arrow"
    if lower.endswith(".tar"):
        return "webdataset"
    return None


def files_of(data_path: str, suffix: str, what: str) -> list[str]:
    """The `suffix` files a data path names: the file, every such file under a folder
    (sorted, recursive), or the expansion of a pattern. Raises `SourceError` when none or a
    named one is missing."""
    if is_pattern(data_path):
        files = expand(data_path)
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise SourceError("missing_file", missing[0], f"{what} not found{more}")
    else:
        p = Path(data_path)
        if p.is_dir():
            files = [str(f) for f in sorted(p.rglob(f"*{suffix}")) if f.is_file()]
        elif p.is_file():
            files = [str(p)]
        else:
            raise SourceError("missing_file", data_path, f"{what} not found")
    if not files:
        raise SourceError("missing_file", data_path, f"no {suffix} files")
    return files
