"""`vlaunch eval RUN_DIR [--data NAME_OR_MIXTURE | --data FILE.json] [--checkpoint WHICH]`.

Held-out loss and exact match of greedy answers, by the trainer's own evaluator, replaying the
run's evaluation shards and batch size so that the numbers match what the run printed. The
result is merged into `<run>/eval.json` (under `evaluations`), or written to `--output`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from launcher.commands.infer import add_device_arguments

if TYPE_CHECKING:
    from trainer.eval_run import Evaluation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="RUN_DIR",
        help="a run directory, a checkpoint, or an exported adapter / model folder",
    )
    parser.add_argument(
        "--data",
        metavar="NAME_OR_MIXTURE",
        help="dataset names of the run's registries joined with '+', or a dataset file "
        "(default: the run's data.eval_mixture)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="WHICH",
        default=None,
        help="final (default), latest or step-N of a run directory",
    )
    parser.add_argument(
        "--output", metavar="FILE.json", help="write the result here instead of <run>/eval.json"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="B",
        help="samples per batch (default: the run's evaluation batch)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=None,
        metavar="W",
        help="evaluate as W ranks would, one after the other (default: the run's world size)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from launcher.commands.common import print_json
    from trainer.eval_run import default_output, evaluate, record
    from trainer.infer import device_and_dtype
    from trainer.trained import resolve
    from vlaunch_core.errors import UserError

    for flag in ("batch_size", "shards"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1")
    trained = resolve(args.source, args.checkpoint)
    device, dtype = device_and_dtype(args.device, args.dtype)
    evaluation = evaluate(
        trained,
        data=args.data,
        batch_size=args.batch_size,
        shards=args.shards,
        device=device,
        dtype=dtype,
    )
    out = Path(args.output).expanduser() if args.output else default_output(trained)
    if out is not None:
        record(out, evaluation)
    if args.json:
        print_json(evaluation.to_json())
    else:
        _print_table(evaluation, out)
    return 0


def _print_table(evaluation: Evaluation, out: object) -> None:
    from launcher.output import Column, print_table

    r = evaluation.result

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    step = f" (step {evaluation.step})" if evaluation.step is not None else ""
    columns = [Column("data", keep=True), Column("weights", keep=True)]
    columns += [Column(c, right=True) for c in ("samples", "loss", "exact match", "chance")]
    row = (
        evaluation.data,
        evaluation.weights + step,
        str(r.total),
        "-" if r.loss is None else f"{r.loss:.4f}",
        f"{pct(r.accuracy)} ({r.correct}/{r.total})",
        pct(r.chance),
    )
    print_table(f"Held-out evaluation: {evaluation.key}", columns, [row])
    if r.examples:
        rows = [(e["reference"], e["prediction"]) for e in r.examples]
        print_table("examples", ["reference", "prediction"], rows)
    if out is not None:
        print(f"written to {out}")
