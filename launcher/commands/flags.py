"""Command-line flags generated from the job spec's schema: one generator, one quoting rule.

A flag is sugar for the override of one spec key (`--nodes 4` is `resources.nodes=4`,
`--partition gpu` is `slurm.partition="gpu"`, `--volume-size 1Ti` is
`k8s.volume.size="1Ti"`), and its help text is the field's own description, so the spec
stays the one source of truth (submitit derives its options from one signature the same way).

The quoting rule, decided by the field's type, for every command:

- plain text (`str`, `str | None`, a `Literal` of strings): the value JSON-quoted, so
  `--account 123` stays the string "123" and any character survives the YAML parse of the
  override; a list of plain text takes one flag per item (`--container-mounts A
  --container-mounts B`), JSON-quoted as a list;
- booleans: `--x` sets true, or `--no-x` sets false when the default is true; the `enabled`
  key of a nested section is the section's own flag (`--kuberay`, `--no-volume`);
- numbers: checked by argparse, written as numbers;
- everything else (mappings, lists of mappings, `SECRET:KEY` references): the text as
  written, parsed as YAML like any override (`--tolerations '[{key: a, operator: Exists}]'`).
"""

from __future__ import annotations

import argparse
import json
import typing
from typing import Any

from pydantic.fields import FieldInfo

from vlaunch_core.spec_errors import first_sentence
from vlaunch_core.spec_fields import field_of, kind_of

DEST = "_spec__"
"""Prefix of the argparse `dest` of every generated flag (then the dotted key, `.` -> `__`)."""

Parser = argparse.ArgumentParser | argparse._ArgumentGroup


def field_help(dotted: str, field: FieldInfo | None = None) -> str:
    """The first sentence of the key's description, and the key it sets."""
    field = field or field_of(dotted)
    first = first_sentence(field.description or "")
    return f"{first} (= {dotted})".replace("%", "%%")


def _choices(annotation: Any) -> tuple[str, ...] | None:
    """The strings of a `Literal[...]` (or `Literal[...] | None`), else None."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(a) for a in typing.get_args(annotation))
    if len(args) == 1 and typing.get_origin(args[0]) is typing.Literal:
        return _choices(args[0])
    return None


def encode(dotted: str, value: Any) -> str:
    """The override `dotted=VALUE` a flag's parsed value stands for (the one quoting rule)."""
    kind = kind_of(field_of(dotted).annotation)
    if kind in ("text", "text-list"):
        return f"{dotted}={json.dumps(value)}"
    return f"{dotted}={value}"  # bool ("true"/"false"), numbers, YAML text


def add_field_flag(
    parser: Parser,
    flag: str,
    dotted: str,
    *,
    metavar: str | None = None,
    field: FieldInfo | None = None,
) -> None:
    """The flag `flag` for the spec key `dotted` (a boolean default-true key gets `--no-...`)."""
    field = field or field_of(dotted)
    dest = DEST + dotted.replace(".", "__")
    annotation = field.annotation
    kind = kind_of(annotation)
    helptext = field_help(dotted, field)
    if kind == "bool":
        on = field.default is True
        name = flag.removeprefix("--")
        parser.add_argument(
            f"--no-{name}" if on else flag,
            dest=dest,
            action="store_const",
            const="false" if on else "true",
            default=None,
            help=("turn off: " if on else "") + helptext,
        )
    elif kind == "text-list":
        parser.add_argument(
            flag,
            dest=dest,
            action="append",
            metavar=metavar or "VALUE",
            help=helptext + "; repeat for several",
        )
    elif kind in ("int", "float"):
        optional = type(None) in typing.get_args(annotation)
        parser.add_argument(
            flag,
            dest=dest,
            type=_number(int if kind == "int" else float, optional=optional),
            default=None,
            metavar=metavar or "N",
            help=helptext + ("; null unsets it" if optional else ""),
        )
    else:
        choices = _choices(annotation)
        parser.add_argument(
            flag,
            dest=dest,
            default=None,
            choices=choices,
            metavar=None if choices else (metavar or _metavar(annotation, dotted)),
            help=helptext,
        )


def _number(cast: type, *, optional: bool) -> Any:
    """argparse's `type` for a number; an optional key also takes `null` (unset)."""

    def parse(text: str) -> Any:
        if optional and text.strip().lower() in ("null", "none"):
            return "null"
        return cast(text)

    parse.__name__ = cast.__name__  # argparse's "invalid int value: 'x'"
    return parse


def _metavar(annotation: Any, dotted: str) -> str:
    if kind_of(annotation) == "text":
        return dotted.rpartition(".")[2].upper()
    names = {getattr(a, "__name__", "") for a in typing.get_args(annotation)}
    return "SECRET:KEY" if "SecretRef" in names else "YAML"


def add_section_flags(parser: Parser, model: Any, dotted: str, prefix: str = "") -> None:
    """One flag per key of the spec section `model` at `dotted`, nested sections included
    (their keys prefixed with the section's name: `--volume-size`)."""
    from vlaunch_core.section import Section

    for name, field in model.model_fields.items():
        key, annotation = f"{dotted}.{name}", field.annotation
        option = f"{prefix}-{name}" if prefix else name
        if isinstance(annotation, type) and issubclass(annotation, Section):
            add_section_flags(parser, annotation, key, option)
            continue
        if name == "enabled" and prefix and annotation is bool:
            option = prefix  # the section's own switch: --kuberay, --no-volume
        add_field_flag(parser, "--" + option.replace("_", "-"), key, field=field)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides the generated flags on this command line stand for, in flag order."""
    out = []
    for key, value in vars(args).items():
        if key.startswith(DEST) and value is not None:
            out.append(encode(key[len(DEST) :].replace("__", "."), value))
    return out
