"""Dotted `key=value` overrides (`vlaunch local job.yaml train.lr=2e-5 data.packing=true`).

A text key (`name`, `slurm.partition`, `env.X`, a choice such as `train.strategy`) takes the
value as written: `name=abc #x` is the name "abc #x", `slurm.account=123` the text "123".
A JSON-quoted value is decoded (the flag generator writes `slurm.account="123"`, so a flag
and the override it stands for agree), and an empty value unsets an optional text key.
Every other value is parsed as YAML (scalars and flow collections, with the bounds of
`vlaunch_core.yamlfile`), so `true`, `8`, `2e-5`, `[a, b]` and `null` mean what they mean in
the spec file. Unknown keys are reported by the spec validation, with "did you mean".
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from vlaunch_core.errors import UserError
from vlaunch_core.spec_fields import annotation_at, is_optional, is_text
from vlaunch_core.yamlfile import load_yaml_text

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
    path = key.split(".")
    annotation = annotation_at(path)
    if annotation is not None and is_text(annotation):
        return path, _text_value(value, optional=is_optional(annotation))
    try:
        parsed = load_yaml_text(value, f"override {key}") if value.strip() else ""
    except UserError as e:
        if "invalid YAML" not in e.message:  # bounds (aliases, nesting) are errors
            raise
        parsed = value
    return path, parsed


def _text_value(value: str, *, optional: bool) -> str | None:
    """A text key's value: as written; JSON-quoted text decoded; empty unsets it."""
    if value == "" and optional:
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, str):
            return decoded
    return value


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
