"""Arguments shared by the commands that take a job spec.

Flags such as `--nodes` are sugar for overrides of spec keys (`resources.nodes=...`): the spec
stays the one source of truth, and each flag's help text is the field's own description.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlaunch_core.spec import JobSpec


def _field(dotted: str) -> Any:
    """The pydantic field of a dotted spec key."""
    from vlaunch_core.spec import JobSpec
    from vlaunch_core.spec_errors import annotation_model

    model: Any = JobSpec
    parts = dotted.split(".")
    for part in parts[:-1]:
        model = annotation_model(model.model_fields[part].annotation)
    return model.model_fields[parts[-1]]


def field_help(dotted: str) -> str:
    """The schema description of a spec key, first sentence."""
    text = " ".join((_field(dotted).description or "").split())
    return text.split(". ")[0].rstrip(".") + f" (= {dotted})"


def _is_text(dotted: str) -> bool:
    """Whether the key holds plain text (`str` or `str | None`), as opposed to YAML values."""
    import types
    import typing

    annotation = _field(dotted).annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation)) - {type(None)} == {str}
    return annotation is str


def add_spec_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    dotted: str,
    *,
    kind: type = str,
    metavar: str | None = None,
    boolean: bool = False,
) -> None:
    """A flag that becomes the override `dotted=value`."""
    dest = "_spec__" + dotted.replace(".", "__")
    if boolean:
        parser.add_argument(
            flag,
            dest=dest,
            action="store_const",
            const="true",
            default=None,
            help=field_help(dotted),
        )
    else:
        parser.add_argument(
            flag, dest=dest, type=kind, default=None, metavar=metavar, help=field_help(dotted)
        )


def spec_flag_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    for key, value in vars(args).items():
        if key.startswith("_spec__") and value is not None:
            dotted = key[len("_spec__") :].replace("__", ".")
            # text stays text (`--account 123` is the account "123", not a number); other
            # keys take YAML (`--tolerations "[{key: a}]"`)
            text = json.dumps(value) if isinstance(value, str) and _is_text(dotted) else value
            out.append(f"{dotted}={text}")
    return out


def add_job_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB.yaml", help="the job spec")


def add_resource_flags(parser: argparse.ArgumentParser) -> None:
    add_spec_flag(parser, "--nodes", "resources.nodes", kind=int, metavar="N")
    add_spec_flag(parser, "--gpus-per-node", "resources.gpus_per_node", kind=int, metavar="G")
    add_spec_flag(parser, "--profile", "resources.profile", metavar="P")


def load_job(args: argparse.Namespace, *, check: bool = True) -> JobSpec:
    """The job spec named by `args.job`, with flag overrides then `key=value` overrides."""
    from vlaunch_core.spec_load import load_spec

    overrides = spec_flag_overrides(args) + list(getattr(args, "overrides", []) or [])
    return load_spec(args.job, overrides, check=check)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
