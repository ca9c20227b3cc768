"""Files that ship next to the code: the Slurm templates and the Helm chart.

In a checkout they are the top-level `slurm/` and `charts/` folders; in a wheel they are
packaged as `launcher/_assets/slurm` and `launcher/_assets/charts` (pyproject's hatch
`force-include`). `asset_dir` finds them in either layout.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CANDIDATES = (_PACKAGE / "_assets", _PACKAGE.parent)


def asset_dir(name: str) -> Path:
    """The folder `name` (`slurm` or `charts`) in the wheel layout, else in the checkout."""
    for root in _CANDIDATES:
        path = root / name
        if path.is_dir():
            return path
    searched = ", ".join(str(root / name) for root in _CANDIDATES)
    raise FileNotFoundError(f"vlaunch asset folder '{name}' not found (looked in {searched})")
