"""Reading a job spec: YAML, dotted overrides, and validation that reports every problem of
a spec in one round.

`load_spec(path, overrides)` reads the file (`yaml.safe_load` only), applies the overrides,
validates every key, resolves relative input paths against the spec's folder, and runs the
rules that involve several keys, the model reference and cheap data facts. A key with a bad
value is reported and then left at its default so that the rest of the spec is still
checked; problems that a dropped key could have caused are not reported twice. All of it
comes back as one `ProblemReport`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vlaunch_core.errors import Problem, ProblemReport, UserError, raise_if_any
from vlaunch_core.secrets import find_secrets
from vlaunch_core.spec import JobSpec
from vlaunch_core.spec_errors import dotted, field_at, pydantic_problems, union_free
from vlaunch_core.spec_rules import cross_field_problems
from vlaunch_core.yamlfile import read_yaml

_MAX_REPAIRS = 8
_PLACEHOLDER = "<missing>"
#: Rule problems reported at a key, and the other keys they follow from: when one of those
#: was dropped as invalid, the rule's complaint is a consequence, not news.
_INVOLVES: dict[str, tuple[str, ...]] = {
    "train.global_batch_size": (
        "train.micro_batch_size",
        "train.grad_accum_steps",
        "train.batch_rounding",
        "resources",
    ),
    "data.mixture": ("data.registry", "data.datasets"),
    "data.eval_mixture": ("data.registry", "data.datasets"),
    "model.name_or_path": ("model.revision", "model.trust_remote_code"),
}


def load_spec(
    path: str | os.PathLike[str],
    overrides: list[str] | None = None,
    *,
    check: bool = True,
) -> JobSpec:
    """Read, override, validate and resolve a job spec; raise `ProblemReport` on any problem."""
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(
            f"{path}: a job spec is a YAML mapping (name:, model:, data:, ...), "
            f"got a {type(raw).__name__}"
        )
    from vlaunch_core.overrides import apply_overrides

    raw = apply_overrides(raw, overrides or [])
    return spec_from_dict(raw, base_dir=Path(path).parent, source=str(path), check=check)


def spec_from_dict(
    raw: dict[str, Any],
    *,
    base_dir: str | os.PathLike[str] = ".",
    source: str | None = None,
    check: bool = True,
) -> JobSpec:
    """Validate a dict as a job spec; paths are resolved against `base_dir`. With `check`,
    the cross-key rules, the model reference and cheap data facts are checked too."""
    spec, problems, dropped = _validate_repairing(raw)
    if check:
        problems = secret_problems(raw) + problems
    if spec is not None:
        spec = resolve_paths(spec, Path(base_dir))
        if check:
            later = cross_field_problems(spec) + model_problems(spec) + data_fact_problems(spec)
            problems += [p for p in later if not _follows_from(p.where, dropped)]
    if problems or spec is None:
        raise ProblemReport(title="invalid job spec", problems=problems, source=source)
    return spec


def secret_problems(raw: dict[str, Any]) -> list[Problem]:
    """Values that look like credentials, under any key (named, never echoed)."""
    return [
        Problem(
            where,
            f"looks like a {kind}; secrets never go in a job spec (it would be copied into "
            "the run's files, checkpoints and the Kubernetes ConfigMap)",
            "remove it: export it in the environment (local, Slurm) or use a Kubernetes "
            "Secret (k8s.hf_token, k8s.wandb_api_key); tracking URIs take credentials from "
            "the environment (e.g. MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)",
        )
        for where, kind in find_secrets(raw)
    ]


def _validate_repairing(raw: dict[str, Any]) -> tuple[JobSpec | None, list[Problem], list[str]]:
    """Validate; on errors, report them, drop the offending keys (defaults take their place)
    and validate again, so that one pass finds every problem. Returns the spec (None when a
    required key is missing and cannot stand in), the problems and the dropped keys."""
    data = copy.deepcopy(raw)
    problems: list[Problem] = []
    dropped: list[str] = []
    for _ in range(_MAX_REPAIRS):
        try:
            return JobSpec.model_validate(data), problems, dropped
        except ValidationError as e:
            for p in pydantic_problems(e, JobSpec):  # later rounds: only news
                if p not in problems and not _follows_from(p.where, dropped):
                    problems.append(p)
            progress = False
            for err in e.errors(include_url=False):
                loc = union_free(err["loc"])
                key = _repair(data, loc, err["type"]) if loc else None
                if key is not None:
                    dropped.append(key)
                    progress = True
            if not progress:
                return None, problems, dropped
    return None, problems, dropped


def _repair(data: dict[str, Any], loc: tuple[Any, ...], kind: str) -> str | None:
    """Remove the invalid value at `loc` (or the list holding it) so its default applies;
    a missing required text key gets a placeholder. The dotted key changed, or None."""
    node: Any = data
    for depth, part in enumerate(loc[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if isinstance(child, list):  # an element of a list: drop the whole list
            del node[part]
            return dotted(loc[: depth + 1])
        if not isinstance(child, dict):
            return None
        node = child
    last = loc[-1]
    if not isinstance(node, dict):
        return None
    if kind == "missing":  # a stand-in only for text keys (a section cannot be guessed)
        field = field_at(JobSpec, loc)
        if last in node or field is None or field.annotation is not str:
            return None
        node[last] = _PLACEHOLDER
        return dotted(loc)
    if last not in node:
        return None
    del node[last]
    return dotted(loc)


def _follows_from(where: str, dropped: list[str]) -> bool:
    involved = (where, *_INVOLVES.get(where, ()))
    return any(
        w == d or w.startswith(d + ".") or d.startswith(w + ".") for w in involved for d in dropped
    )


def model_problems(spec: JobSpec) -> list[Problem]:
    """The model must be one vlaunch can train: its reference resolves (a local folder, a
    cached or known hub id, `tiny:`/`random:` names), its layout is not refused, and the
    installed transformers builds an image-text-to-text model from it (the description,
    cached per model after the first time). A hub id only reachable over the network, or a
    machine without the training stack, is left to the cluster."""
    from vlaunch_core.models.catalog import check_supported, describe
    from vlaunch_core.models.configs import ModelNotLocal

    m = spec.model
    if m.name_or_path == _PLACEHOLDER:
        return []
    try:
        check_supported(m)
        describe(m)
    except ModelNotLocal:
        return []
    except UserError as e:
        return [Problem("model.name_or_path", e.message, e.hint)]
    return []


def data_fact_problems(spec: JobSpec) -> list[Problem]:
    """Facts of the data that are cheap to know: a training mixture smaller than one global
    batch cannot train a single step (counted up to that batch size only)."""
    from vlaunch_core.data.mixture import mixture_size_at_least

    batch = spec.train.global_batch_size
    size = mixture_size_at_least(spec, batch)
    if size is None or size >= batch:
        return []
    return [
        Problem(
            "data.mixture",
            f"the training mixture has {size} samples, fewer than one global batch ({batch})",
            "add data, repeat a dataset (name*N), or lower train.global_batch_size",
        )
    ]


def _is_local_path(value: str) -> bool:
    return value.startswith(("./", "../", "/", "~")) or value in (".", "..")


def _resolve(base: Path, value: str) -> str:
    if "://" in value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).absolute())


def resolve_paths(spec: JobSpec, base: Path) -> JobSpec:
    """A copy of `spec` whose relative input paths are resolved against `base`."""
    spec = spec.model_copy(deep=True)
    if _is_local_path(spec.model.name_or_path):
        spec.model.name_or_path = _resolve(base, spec.model.name_or_path)
    if spec.model.adapter is not None:
        spec.model.adapter = _resolve(base, spec.model.adapter)
    spec.data.registry = [_resolve(base, r) for r in spec.data.registry]
    spec.resources.profiles = [_resolve(base, r) for r in spec.resources.profiles]
    for entry in spec.data.datasets.values():
        if entry.source != "hf":  # a hub id, not a path
            entry.data_path = _resolve(base, entry.data_path)
        if entry.media_dir is not None:
            entry.media_dir = _resolve(base, entry.media_dir)
    return spec


__all__ = [
    "ProblemReport",
    "load_spec",
    "raise_if_any",
    "resolve_paths",
    "spec_from_dict",
]
