"""Turn pydantic validation errors into `Problem`s that name the key and say how to fix it
(unknown keys get "did you mean"; secrets get told where they belong)."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import ValidationError

from vlaunch_core.errors import Problem, did_you_mean
from vlaunch_core.section import Section

_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "API_KEY", "APIKEY", "ACCESS_KEY")


def annotation_model(annotation: Any) -> type[Section] | None:
    """The Section class inside an annotation like `X | None` or `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    for arg in typing.get_args(annotation):
        found = annotation_model(arg)
        if found is not None:
            return found
    return None


def _model_at(root: type[Section], loc: tuple[Any, ...]) -> type[Section] | None:
    """The Section class that owns the key at `loc` (used for 'did you mean')."""
    model: type[Section] | None = root
    i = 0
    while i < len(loc) and model is not None:
        key = loc[i]
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            return model if i == len(loc) else None
        inner = annotation_model(field.annotation)
        origin = typing.get_origin(field.annotation)
        if origin is dict or (
            inner is not None
            and any(typing.get_origin(a) is dict for a in typing.get_args(field.annotation))
        ):
            i += 1  # skip the dict key
        model = inner
        i += 1
    return model


def dotted(loc: tuple[Any, ...]) -> str:
    """`('a', 'b', 0)` -> `a.b[0]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def field_at(root: type[Section], loc: tuple[Any, ...]) -> Any:
    """The pydantic field at `loc` (None when there is none)."""
    parent = _model_at(root, loc[:-1])
    if parent is None or not loc or not isinstance(loc[-1], str):
        return None
    return parent.model_fields.get(loc[-1])


def _type_hint(root: type[Section], loc: tuple[Any, ...]) -> str | None:
    parent = _model_at(root, loc[:-1])
    if parent is None or not isinstance(loc[-1], str):
        return None
    field = parent.model_fields.get(loc[-1])
    if field is None or not field.description:
        return None
    return first_sentence(field.description)


#: Where the first sentence of a description ends (not at "e.g." or "i.e.").
_SENTENCE = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z`(])")


def first_sentence(text: str) -> str:
    """The first sentence of a field's description, on one line, without its period."""
    joined = " ".join(text.split())
    return _SENTENCE.split(joined)[0].rstrip(".")


def pydantic_problems(error: ValidationError, root: type[Section]) -> list[Problem]:
    """Turn pydantic's errors into problems that name the key and say how to fix it."""
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for err in error.errors(include_url=False):
        loc = union_free(err["loc"])
        where = dotted(loc)
        kind = err["type"]
        hint: str | None = None
        if kind == "extra_forbidden":
            parent = _model_at(root, loc[:-1])
            known = [f.alias or n for n, f in (parent.model_fields.items() if parent else [])]
            msg = f"unknown key '{loc[-1]}'.{did_you_mean(str(loc[-1]), known)}"
            if looks_secret(str(loc[-1])):
                hint = "secrets never go in a job spec: export them in the environment"
            else:
                hint = f"valid keys here: {', '.join(sorted(known))}" if known else None
        elif kind == "missing":
            msg = "required key is missing"
            desc = _type_hint(root, loc)
            hint = f"add '{where}' ({desc})" if desc else f"add '{where}'"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict | list):
                msg += f" (got {err['input']!r})"
            desc = _type_hint(root, loc)
            hint = desc
        key = (where, msg)
        if key in seen:
            continue
        seen.add(key)
        problems.append(Problem(where, msg, hint))
    return _merge_union_noise(problems)


def union_free(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """An error location without the union-member names pydantic inserts."""
    return tuple(p for p in loc if not _is_union_tag(p))


def _is_union_tag(part: Any) -> bool:
    """pydantic adds union member names ('int', "literal['auto']") to error locations."""
    return isinstance(part, str) and (
        part in ("int", "float", "str", "bool", "list[str]", "function-after[_check_time(), str]")
        or part.startswith(("literal[", "function-", "tuple[", "list[", "dict[", "constrained-"))
    )


def _merge_union_noise(problems: list[Problem]) -> list[Problem]:
    """`int | 'auto'` fields yield one error per union member: keep one, say both options."""
    by_where: dict[str, list[Problem]] = {}
    for p in problems:
        by_where.setdefault(p.where, []).append(p)
    merged: list[Problem] = []
    for where, group in by_where.items():
        if len(group) == 1:
            merged.append(group[0])
            continue
        msgs = "; or ".join(dict.fromkeys(p.message for p in group))
        merged.append(Problem(where, msgs, group[0].hint))
    return merged


def looks_secret(key: str) -> bool:
    upper = key.upper().replace("-", "_")
    return any(w in upper for w in _SECRET_WORDS) or upper in ("KEY", "TOKEN")
