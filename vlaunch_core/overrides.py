"""Dotted `key=value` overrides (`vlaunch local job.yaml train.lr=2e-5 data.packing=true`).

Values are parsed as YAML scalars/flow collections (`yaml.safe_load`), so `true`, `8`, `2e-5`,
`[a, b]` and `null` mean what they mean in the spec file. Unknown keys are reported by the
spec validation, with "did you mean".
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from vlaunch_core.errors import UserError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*$")


def is_override(token: str) -> bool:
    """Whether a command-line token looks like `a.b.c=value`."""
    key, sep, _ = token.partition("=")
    return bool(sep) and bool(_KEY.match(key))


def parse_override(token: str) -> tuple[list[str], Any]:
    key, sep, value = token.partition("=")
    if not sep or not _KEY.match(key):
        raise UserError(
            f"'{token}' is not an override",
            hint="write overrides as dotted.key=value, e.g. train.lr=2e-5",
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with every override applied, in order."""
    out = copy.deepcopy(raw)
    for token in overrides:
        path, value = parse_override(token)
        node: Any = out
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise UserError(
                    f"override '{token}': '{where}' is a {type(child).__name__}, not a section",
                    hint=f"override '{where}' itself, e.g. {where}=<value>",
                )
            node = child
        node[path[-1]] = value
    return out
