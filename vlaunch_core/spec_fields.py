"""The schema seen key by key: the field behind a dotted key, and how its value is written on
a command line (shared by the flag generator and the `key=value` overrides, so a flag and
the override it stands for always mean the same)."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic.fields import FieldInfo


def field_of(dotted: str) -> FieldInfo:
    """The pydantic field of a dotted spec key (`k8s.volume.size`)."""
    from vlaunch_core.spec import JobSpec
    from vlaunch_core.spec_errors import annotation_model

    model: Any = JobSpec
    parts = dotted.split(".")
    for part in parts[:-1]:
        model = annotation_model(model.model_fields[part].annotation)
    field: FieldInfo = model.model_fields[parts[-1]]
    return field


def annotation_at(path: list[str]) -> Any:
    """The type of the value at a key path, through sections and mappings
    (`env.NAME` -> str, `data.datasets.NAME.data_path` -> str); None when unknown."""
    from vlaunch_core.section import Section
    from vlaunch_core.spec import JobSpec

    annotation: Any = JobSpec
    i = 0
    while i < len(path):
        model = _section_of(annotation)
        if model is not None:
            field = model.model_fields.get(path[i])
            if field is None:
                field = next((f for f in model.model_fields.values() if f.alias == path[i]), None)
            if field is None:
                return None
            annotation = field.annotation
            i += 1
            continue
        value = _mapping_value(annotation)
        if value is None:
            return None
        annotation = value  # path[i] is a key of the mapping
        i += 1
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return None
    return annotation


def _section_of(annotation: Any) -> Any:
    from vlaunch_core.section import Section

    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], Section):
        return args[0]  # `X | None`
    return None


def _mapping_value(annotation: Any) -> Any:
    if typing.get_origin(annotation) is dict:
        return typing.get_args(annotation)[1]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and typing.get_origin(args[0]) is dict:
        return typing.get_args(args[0])[1]
    return None


def is_text(annotation: Any) -> bool:
    """`str`, `str | None` or a `Literal` of strings (`| None`)."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(is_text(a) for a in args)
    return False


def is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def kind_of(annotation: Any) -> str:
    """How a field is written on the command line: bool, int, float, text, text-list or yaml."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation is bool:
        return "bool"
    if annotation is int or (typing.get_origin(annotation) is not None and args == [int]):
        return "int"
    if annotation is float or (typing.get_origin(annotation) is not None and args == [float]):
        return "float"
    if is_text(annotation):
        return "text"
    if typing.get_origin(annotation) is list and args and is_text(args[0]):
        return "text-list"
    return "yaml"
