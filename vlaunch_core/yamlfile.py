"""Reading a YAML file of the user (job spec, registry, profiles): `yaml.safe_load` only,
bounded in size, every failure one user error naming the file and line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from vlaunch_core.errors import UserError

MAX_YAML_BYTES = 4 << 20
"""A spec, registry or profiles file is a few KB; anything bigger is refused unread."""


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """`yaml.safe_load` a file, turning I/O and syntax errors into one user error."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file", hint="check the path of the job spec")
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise UserError(
                f"{p}: {p.stat().st_size} bytes is too big for a vlaunch YAML file (at most "
                f"{MAX_YAML_BYTES >> 20} MiB)",
                hint="give the YAML file itself (job spec, registry or profiles)",
            )
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read: {e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        problem = getattr(e, "problem", None) or str(e)
        raise UserError(
            f"{where}: invalid YAML: {problem}", hint="fix the syntax at that line"
        ) from None
