"""Generate docs/spec-reference.md from the job-spec schema (the one source of truth).

    python -m launcher.docgen > docs/spec-reference.md

A test checks that the committed file is up to date.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from vlaunch_core.section import Section


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join(_type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, Section):
            return "(section)"
    if isinstance(value, str):
        return f"`{value}`"
    if value is None:
        return "`null`"
    return f"`{value!r}`".replace("True", "true").replace("False", "false")


def _section_of(annotation: Any) -> type[Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def rows(model: type[Section], prefix: str = "") -> list[tuple[str, str, str, str]]:
    out = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        sub = _section_of(field.annotation)
        is_map = typing.get_origin(field.annotation) is dict
        desc = " ".join((field.description or "").split())
        if sub is not None and not is_map:
            out.append((key, "section", _default(field), desc))
            out += rows(sub, key + ".")
        elif sub is not None and is_map:
            out.append((key, "map of sections", _default(field), desc))
            out += rows(sub, key + ".<name>.")
        else:
            out.append((key, _type_name(field.annotation), _default(field), desc))
    return out


def render() -> str:
    from vlaunch_core.spec import JobSpec

    lines = [
        "# Job spec reference",
        "",
        "Generated from `vlaunch_core/spec.py` by `python -m launcher.docgen` "
        "(do not edit by hand).",
        "Every key can be overridden on the command line as `dotted.key=value`.",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for key, typ, default, desc in rows(JobSpec):
        escaped = desc.replace("|", "\\|")
        lines.append(f"| `{key}` | {typ} | {default} | {escaped} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
