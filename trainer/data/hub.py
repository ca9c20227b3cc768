"""Hugging Face dataset ids (`source: hf`) to local files, with `datasets` and
`huggingface_hub` and their cache conventions (`HF_HOME`, `HF_HUB_CACHE`,
`HF_DATASETS_CACHE`, `HF_HUB_OFFLINE`). No torch: `vlaunch data check` uses it too.

In this order:

1. **The hub cache** (`$HF_HOME/hub/datasets--ORG--NAME/snapshots/<commit>/`, what
   `hf download --repo-type dataset ORG/NAME`, `snapshot_download` or an earlier
   `load_dataset` left): `snapshot_download(..., local_files_only=True)` finds the snapshot of
   the revision, and `datasets.load_dataset_builder(snapshot)` reads the repository's own
   configuration (the `configs:` of its README, or the default file patterns) to list the
   data files of the config and split. Parquet and Arrow files are then read in place: no
   copy, no conversion.
2. **`datasets.load_dataset(id, config, split=..., revision=...)`**: offline it finds a
   dataset prepared earlier in the `datasets` cache; online it downloads and prepares it
   (the one case where data is fetched, and only where the hub is reachable). The prepared
   Arrow files are read in place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlaunch_core.data.sources import ResolvedHub, SourceError

if TYPE_CHECKING:
    from vlaunch_core.spec import DatasetEntry

logger = logging.getLogger(__name__)

_READABLE = {".parquet": "parquet", ".arrow": "arrow"}
_resolved: dict[tuple[str, ...], ResolvedHub] = {}


def resolve_hub(entry: DatasetEntry) -> ResolvedHub:
    """The local Parquet or Arrow files of a hub dataset's config and split (cached per
    process). Raises `SourceError` with what to do when it is not available."""
    from huggingface_hub import constants

    split = entry.split or "train"
    key = (constants.HF_HUB_CACHE, entry.data_path, entry.config_name or "", split,
           entry.revision or "")  # fmt: skip
    if key not in _resolved:
        _resolved[key] = _resolve(entry.data_path, entry.config_name, split, entry.revision)
        found = _resolved[key]
        logger.info("%s: %d file(s) from %s", entry.data_path, len(found.files), found.description)
    return _resolved[key]


def _resolve(repo: str, config: str | None, split: str, revision: str | None) -> ResolvedHub:
    try:
        import datasets
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise SourceError(
            "missing_file",
            repo,
            "Hugging Face dataset ids need the datasets library",
            hint="install the training stack: pip install -e '.[train]'",
        ) from None
    where = f"{repo}" + (f" ({config})" if config else "") + f" split {split}"
    try:
        folder = snapshot_download(
            repo, repo_type="dataset", revision=revision, local_files_only=True
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        folder = None
    if folder is not None:
        found = _from_snapshot(Path(folder), config, split, where)
        if found is not None:
            return found
    return _from_load_dataset(datasets, repo, config, split, revision, where)


def _from_snapshot(folder: Path, config: str | None, split: str, where: str) -> ResolvedHub | None:
    import datasets

    try:
        builder = datasets.load_dataset_builder(str(folder), config)
    except (ValueError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as e:
        raise SourceError(
            "missing_file",
            where,
            f"the cached snapshot {folder} has no such dataset configuration ({e})",
            hint=_configs_hint(folder),
        ) from e
    files_by_split = builder.config.data_files or {}
    if split not in files_by_split:
        raise SourceError(
            "missing_file",
            where,
            f"no split '{split}' (splits: {', '.join(files_by_split) or 'none'})",
            hint="set split: on the dataset entry",
        )
    files = [str(f) for f in files_by_split[split]]
    kinds = {_READABLE.get(Path(f).suffix.lower()) for f in files}
    if len(kinds) != 1 or None in kinds:
        logger.info("%s: data files are not all Parquet or Arrow: preparing with datasets", where)
        return None
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        logger.info("%s: %d data file(s) not in the snapshot", where, len(missing))
        return None
    kind = kinds.pop()
    assert kind is not None
    return ResolvedHub(kind, files, str(folder), f"the hub cache ({folder})")


def _from_load_dataset(
    datasets: Any, repo: str, config: str | None, split: str, revision: str | None, where: str
) -> ResolvedHub:
    try:
        ds = datasets.load_dataset(repo, config, split=split, revision=revision)
    except (ConnectionError, FileNotFoundError, ValueError, OSError) as e:
        from huggingface_hub import constants

        raise SourceError(
            "missing_file",
            where,
            f"not in the local Hugging Face cache and not downloadable here ({e})",
            hint=f"on a machine with network: hf download --repo-type dataset {repo} "
            f"(HF_HOME={constants.HF_HOME}; copy that folder here), or unset HF_HUB_OFFLINE",
        ) from e
    files = [f["filename"] for f in ds.cache_files]
    if not files or getattr(ds, "_indices", None) is not None:
        raise SourceError("missing_file", where, "the prepared dataset has no Arrow files")
    root = str(Path(files[0]).parent)
    return ResolvedHub("arrow", files, root, f"the datasets cache ({root})")


def _configs_hint(folder: Path) -> str:
    try:
        import datasets

        names = datasets.get_dataset_config_names(str(folder))
    except Exception:  # a hint only: whatever went wrong was reported already
        return "set config_name: on the dataset entry"
    return f"set config_name: to one of {', '.join(names)}"
