"""The backends by name, and job handles.

A handle names the backend and the job: `slurm:<jobid>` (a bare numeric id means Slurm too),
`k8s:<namespace>/<name>`, `local:<run directory>`. `vlaunch status|logs|cancel` take it;
`backend_for(handle)` imports that backend's module only then (`vlaunch --help` stays light),
and an unknown prefix lists the valid ones (torchx's `schedulers/__init__.py` registry).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from launcher.pipeline import Backend

#: backend name -> "module:class", imported on first use.
BACKENDS: dict[str, str] = {
    "local": "launcher.local:LocalBackend",
    "slurm": "launcher.slurm.backend:SlurmBackend",
    "k8s": "launcher.k8s.backend:KubernetesBackend",
}
_MISSING = {
    "local": "Local training support is not installed",
    "slurm": "Slurm support is not installed",
    "k8s": "Kubernetes support is not installed",
}


def backend_of(handle: str) -> str:
    """The backend a job handle names."""
    prefix, sep, rest = handle.partition(":")
    if not sep:
        if handle.isdigit():
            return "slurm"
        raise UserError(
            f"'{handle}' is not a job handle",
            hint="use the handle the launch printed: slurm:<jobid> (or a bare Slurm job id), "
            "k8s:<namespace>/<name> or local:<run directory>",
        )
    if prefix not in BACKENDS or not rest:
        raise UserError(
            f"'{handle}' is not a job handle",
            hint=f"the prefix is one of: {', '.join(f'{b}:' for b in BACKENDS)}",
        )
    return prefix


def backend_class(name: str) -> type[Backend[Any]]:
    """The backend class registered as `name`, imported now."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend '{name}'", hint=f"use one of: {', '.join(BACKENDS)}")
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        found = importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # its package is missing too
        found = False
    if not found:
        raise UserError(
            f"{_MISSING[name]} in this vlaunch",
            hint="install a vlaunch version that includes it",
        )
    cls: type[Backend[Any]] = getattr(importlib.import_module(module_name), class_name)
    return cls


def backend_for(handle: str) -> Backend[Any]:
    """A backend (with its default clients) that controls the job `handle` names."""
    return backend_class(backend_of(handle))()
