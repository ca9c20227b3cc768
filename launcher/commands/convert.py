"""`vlaunch convert FILE`: HF TrainingArguments JSON or VILA settings -> a job spec.

The spec goes to stdout (or `-o`); what became of every setting goes to stderr: what was
mapped where, what was chosen differently from what the input's own tool would do, what has
no vlaunch equivalent, and the shell variables with the values they got.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        metavar="FILE",
        help="JSON/YAML settings, KEY=value lines, or an sft.sh-style command",
    )
    parser.add_argument(
        "-o", "--output", metavar="JOB.yaml", help="write the spec here (default: stdout)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="the value of a shell variable of the script (--set NNODES=2, --set 1=PATH for "
        "its first argument), or a setting of a JSON/YAML file; repeatable",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="nodes the settings were meant for (per-device batch -> global)",
    )
    parser.add_argument(
        "--gpus-per-node",
        type=int,
        default=None,
        help="GPUs per node the settings were meant for (default: "
        "nproc_per_node from the file, else 1)",
    )
    parser.add_argument("--name", help="run name (default: run_name, or output_dir's name)")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")


def run(args: argparse.Namespace) -> int:
    from launcher.convert import convert, read_source
    from launcher.convert_shell import parse_set
    from vlaunch_core.errors import ProblemReport, UserError
    from vlaunch_core.spec_load import spec_from_dict

    if args.output and Path(args.output).exists() and not args.force:
        raise UserError(f"{args.output} exists", hint="pass --force to overwrite it")
    for flag in ("nodes", "gpus_per_node"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1")
    source = read_source(args.file, parse_set(args.set))
    conv = convert(
        source.settings, nodes=args.nodes, gpus_per_node=args.gpus_per_node, name=args.name
    )
    text = yaml.safe_dump(conv.spec, sort_keys=False)
    header = f"# converted by `vlaunch convert {args.file}`\n"
    if args.output:
        Path(args.output).write_text(header + text)
    else:
        sys.stdout.write(header + text)

    err = sys.stderr
    if source.variables:
        print("shell variables:", file=err)
        for name, value in source.variables.items():
            print(f"  ${name} = {value}", file=err)
    print(f"mapped {len(conv.mapped)} setting(s):", file=err)
    for key, target in conv.mapped.items():
        print(f"  {key} -> {target}", file=err)
    if conv.changed:
        print("chosen differently (check these):", file=err)
        for line in conv.changed:
            print(f"  CHANGED {line}", file=err)
    if conv.unmapped:
        print("not mapped (no vlaunch equivalent; set it by hand if needed):", file=err)
        for key, value in conv.unmapped.items():
            print(f"  NOT MAPPED {key}={value!r}", file=err)
    if conv.ignored:
        print("ignored:", file=err)
        for key, reason in conv.ignored.items():
            print(f"  {key}: {reason}", file=err)
    for note in [*source.notes, *conv.notes]:
        print(f"note: {note}", file=err)
    try:
        spec_from_dict(conv.spec, base_dir=Path(args.file).parent, source="converted spec")
    except ProblemReport as report:
        print("the converted spec still needs attention before it validates:", file=err)
        print(report.render(), file=err)
        return 1
    return 0
