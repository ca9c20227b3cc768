"""Dataset registries: VILA's `registry/datasets/*.yaml` entries plus vlaunch keys.

A registry file maps dataset names to entries (`vlaunch_core.spec.DatasetEntry`)::

    SampleQA:
      _target_: llava.data.LLaVADataset
      data_path: sample-qa/dataset.json     # relative to this registry file
      media_dir: sample-qa                  # default: the folder of data_path
    SampleVideo:
      data_path: /data/sample-video/dataset.json
      is_video: true

Names defined later win: registry files in the order `data.registry` lists them, then the
job's inline `data.datasets`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import Problem

if TYPE_CHECKING:
    from vlaunch_core.spec import DatasetEntry, JobSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """A named dataset with absolute paths."""

    name: str
    entry: DatasetEntry
    origin: str
    """The registry file that defines it, or `data.datasets`."""

    @property
    def data_path(self) -> Path:
        return Path(self.entry.data_path)

    @property
    def media_dir(self) -> Path:
        """Root under which every media path of this dataset must resolve."""
        if self.entry.media_dir is not None:
            return Path(self.entry.media_dir)
        if self.entry.source == "hf":  # resolved with the dataset: its snapshot folder
            return Path(self.entry.data_path)
        path = self.data_path
        return path if path.is_dir() else path.parent


def _absolute(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).absolute())


def read_registry(path: str | Path) -> tuple[dict[str, Dataset], list[Problem]]:
    """The datasets of one registry file, and every problem in it (where = the file)."""
    from pydantic import ValidationError

    from vlaunch_core.errors import UserError
    from vlaunch_core.spec import DatasetEntry
    from vlaunch_core.spec_errors import pydantic_problems
    from vlaunch_core.yamlfile import read_yaml

    path = Path(path)
    where = str(path)
    if not path.is_file():
        return {}, [
            Problem(
                where,
                "no such registry file",
                "check data.registry (relative paths are relative to the job spec)",
            )
        ]
    try:
        raw: Any = read_yaml(path)
    except UserError as e:
        hint = e.hint or "check data.registry in the job spec"
        return {}, [Problem(where, e.message.removeprefix(f"{path}: "), hint)]
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [
            Problem(
                where,
                f"a registry is a mapping of dataset names to entries, got {type(raw).__name__}",
                "see docs/data.md, 'Registry'",
            )
        ]
    out: dict[str, Dataset] = {}
    problems: list[Problem] = []
    base = path.parent
    for name, body in raw.items():
        if not isinstance(body, dict):
            problems.append(
                Problem(
                    f"{where}: {name}",
                    "an entry is a mapping with at least data_path",
                    "e.g. {data_path: x/dataset.json}",
                )
            )
            continue
        try:
            entry = DatasetEntry.model_validate(body)
        except ValidationError as e:
            for p in pydantic_problems(e, DatasetEntry):
                problems.append(Problem(f"{where}: {name}.{p.where}", p.message, p.hint))
            continue
        entry = entry.model_copy(
            update={
                "data_path": entry.data_path
                if entry.source == "hf"
                else _absolute(base, entry.data_path),
                "media_dir": None if entry.media_dir is None else _absolute(base, entry.media_dir),
            }
        )
        out[str(name)] = Dataset(str(name), entry, where)
    return out, problems


def known_datasets(spec: JobSpec) -> tuple[dict[str, Dataset], list[Problem]]:
    """Every dataset name the job can use (registries, then inline), with registry problems."""
    found: dict[str, Dataset] = {}
    problems: list[Problem] = []
    for i, reg in enumerate(spec.data.registry):
        datasets, probs = read_registry(reg)
        problems += [Problem(f"data.registry[{i}] {p.where}", p.message, p.hint) for p in probs]
        for name, ds in datasets.items():
            if name in found:
                logger.debug("dataset %s from %s overrides %s", name, ds.origin, found[name].origin)
            found[name] = ds
    for name, entry in spec.data.datasets.items():
        found[name] = Dataset(name, entry, "data.datasets")
    return found, problems
