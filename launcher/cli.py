"""The `vlaunch` command line.

Each subcommand lives in `launcher/commands/<module>.py` with two functions:
`add_arguments(parser)` (light: argparse only) and `run(args) -> int` (may import anything,
lazily). Commands that take a job spec also take dotted `key=value` overrides anywhere on the
line; they arrive in `args.overrides`.

User mistakes raise `vlaunch_core.errors.UserError`: printed without a traceback, exit code 2
(with `--json`, printed as a JSON object on stdout instead).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from launcher import __version__

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    help: str
    overrides: bool = False


#: name -> module; modules are imported only to build their own parser and to run.
COMMANDS: tuple[Command, ...] = (
    Command("validate", "validate", "check a job spec and print it resolved", overrides=True),
    Command("plan", "plan", "batch plan and memory prediction for a job", overrides=True),
    Command("convert", "convert", "turn HF TrainingArguments JSON or VILA settings into a spec"),
    Command("models", "models", "list supported VLM families and tuning presets"),
    Command("profiles", "profiles", "list hardware profiles"),
    Command("data", "data", "check datasets, or write the synthetic demo dataset"),
    Command("local", "local", "train on this machine's GPUs/CPUs with Ray", overrides=True),
    Command(
        "run",
        "run",
        "run the trainer driver on an existing Ray cluster (used by Slurm/K8s)",
        overrides=True,
    ),
    Command("slurm", "slurm", "submit a job to Slurm (or print the sbatch script)", overrides=True),
    Command("k8s", "k8s", "submit a job to Kubernetes (or print the manifests)", overrides=True),
    Command("status", "jobs", "state of a submitted job (Slurm or Kubernetes)"),
    Command("logs", "jobs", "logs of a submitted job"),
    Command("cancel", "jobs", "cancel a submitted job"),
    Command("infer", "infer", "generate with a trained run, adapter or model"),
    Command("export", "export", "export a run: merged model or clean adapter"),
    Command("eval", "evaluate", "held-out loss and exact-match accuracy of a run"),
    Command("report", "report", "one page with the curves, plan, throughput and eval of a run"),
)


def _available(cmd: Command) -> bool:
    return importlib.util.find_spec(f"launcher.commands.{cmd.module}") is not None


class UsageError(Exception):
    """A command line argparse refuses (raised instead of argparse's exit, so that `--json`
    gets its error as JSON too)."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class Parser(argparse.ArgumentParser):
    """argparse, except that a bad command line raises `UsageError` (argparse prints and
    exits itself); the subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage())


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vlaunch",
        description="Fine-tune vision-language models anywhere: one job spec, launched on a "
        "laptop, local GPUs, Slurm or Kubernetes.",
        epilog="Commands that take JOB.yaml also take dotted overrides, e.g. "
        "`vlaunch plan job.yaml train.global_batch_size=256`.",
    )
    parser.add_argument("--version", action="version", version=f"vlaunch {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        if not _available(cmd):
            continue
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        p.set_defaults(_command=cmd)
        module = importlib.import_module(f"launcher.commands.{cmd.module}")
        adder = getattr(module, f"add_{cmd.name}_arguments", None) or module.add_arguments
        adder(p)
    return parser


def configure_logging(verbose: int, quiet: bool) -> None:
    """vlaunch's log lines on stderr; dependencies quiet unless `-v` (which the processes this
    one starts, Ray workers included, inherit through VLAUNCH_VERBOSE)."""
    from vlaunch_core.quiet import VERBOSE_ENV, quiet_dependencies

    if verbose:
        os.environ[VERBOSE_ENV] = str(verbose)
    quiet_dependencies()
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    from rich.console import Console
    from rich.logging import RichHandler

    # stderr: stdout carries command output (--json, dry-run scripts). On a terminal, rich;
    # piped or redirected, plain lines that no width cuts or wraps.
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(
            console=Console(stderr=True),
            show_path=verbose > 0,
            rich_tracebacks=False,
            markup=False,
        )
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
        )
    logging.basicConfig(level=level, handlers=[handler])
    if not verbose:
        for noisy in ("urllib3", "kubernetes", "filelock", "ray", "fsspec", "httpx", "PIL"):
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class _StderrHandler(logging.StreamHandler):
    """Plain lines on whatever `sys.stderr` is when a record is written."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _split_overrides(cmd: Command, extra: list[str]) -> list[str]:
    from vlaunch_core.errors import UserError
    from vlaunch_core.overrides import is_override

    bad = [t for t in extra if not (cmd.overrides and is_override(t))]
    if bad:
        hint = (
            "overrides are written dotted.key=value (e.g. train.lr=2e-5)"
            if cmd.overrides
            else f"see `vlaunch {cmd.name} --help`"
        )
        raise UserError(f"unrecognised argument(s): {' '.join(bad)}", hint=hint)
    return extra


def main(argv: Sequence[str] | None = None) -> int:
    from vlaunch_core.errors import UserError

    argv = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in argv
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except UsageError as e:
        if wants_json:
            _print_json_error({"error": e.message, "fix": e.usage.strip(), "exit_code": 2})
        else:
            sys.stderr.write(e.usage)
            print(f"{parser.prog}: error: {e.message}", file=sys.stderr)
        return 2
    cmd: Command | None = getattr(args, "_command", None)
    if cmd is None:
        parser.print_help()
        return 0
    configure_logging(args.verbose, args.quiet)
    try:
        args.overrides = _split_overrides(cmd, extra)
        module = importlib.import_module(f"launcher.commands.{cmd.module}")
        runner = getattr(module, f"run_{cmd.name}", None) or module.run
        return int(runner(args) or 0)
    except UserError as e:
        if getattr(args, "json", False) or wants_json:  # --json: errors are JSON too, on stdout
            _print_json_error(e.to_json())
        else:
            _print_user_error(e)
        return e.exit_code
    except UsageError as e:  # a subcommand's own parser, used late
        if wants_json:
            _print_json_error({"error": e.message, "fix": e.usage.strip(), "exit_code": 2})
        else:
            sys.stderr.write(e.usage)
            print(f"vlaunch {cmd.name}: error: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vlaunch ... | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug: its traceback on stderr; still one JSON object with --json
        if not wants_json:
            raise
        import traceback

        traceback.print_exc()
        _print_json_error(
            {"error": f"internal error: {type(e).__name__}: {e}", "fix": None, "exit_code": 1}
        )
        return 1


def _print_json_error(data: dict[str, object]) -> None:
    from vlaunch_core.secrets import redact

    json.dump(redact(data), sys.stdout, indent=2)
    sys.stdout.write("\n")


def _print_user_error(e: Exception) -> None:
    from rich.console import Console

    from vlaunch_core.errors import UserError

    text = e.render() if isinstance(e, UserError) else str(e)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if console.is_terminal and not os.environ.get("NO_COLOR"):
        console.print("[bold red]error:[/] ", end="", markup=True)
        console.print(text, markup=False)
    else:
        print(f"error: {text}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
