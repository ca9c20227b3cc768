"""`vlaunch report RUN_DIR [--format html|md] [--output FILE]`: one page about a run.

Loss and learning-rate curves, the plan (batch, predicted vs measured memory), throughput,
held-out results and the tuning plan. HTML embeds its PNGs (one self-contained file);
Markdown writes them into `<name>_files/` next to the page. Default: `<run>/report.html`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="the run directory")
    parser.add_argument(
        "--format",
        choices=("html", "md"),
        default=None,
        help="html (default) or md (default from --output's suffix)",
    )
    parser.add_argument(
        "--output", metavar="FILE", help="where to write it (default <run>/report.<fmt>)"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trainer.report import write_report

    out = write_report(Path(args.run), Path(args.output) if args.output else None, args.format)
    print(f"report: {out}")
    return 0
