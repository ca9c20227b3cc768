"""`python -m trainer.run JOB.yaml [key=value ...]`: the loop without Ray.

One process, or one per device under torchrun (`torchrun --nproc_per_node 2 -m trainer.run
JOB.yaml`): the world size comes from torchrun's environment and overrides the spec's
resources, and the run directory, checkpoints and resume are the same as with Ray. Exit 0
when finished, 75 when stopped by a signal after saving a checkpoint, 2 on a user error.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys
from collections.abc import Sequence

from vlaunch_core.errors import UserError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.run", description=__doc__)
    parser.add_argument("job", metavar="JOB.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or lines")
    parser.add_argument(
        "--plan",
        metavar="PLAN.json",
        help="the plan to train with (a launch's plan.json); without it each rank plans "
        "for the world torchrun started",
    )
    args = parser.parse_intermixed_args(argv)  # overrides may follow --quiet / --plan
    faulthandler.enable()  # a rank that crashes in native code prints its Python stacks
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank {rank}] %(message)s" if "WORLD_SIZE" in os.environ else "%(message)s",
    )
    from trainer import dist
    from trainer.loop import train
    from trainer.models.quantization import bitsandbytes_only_for_qlora
    from trainer.stop import EXIT_STOPPED
    from vlaunch_core.plan import read_plan
    from vlaunch_core.spec_load import load_spec

    try:
        spec = load_spec(args.job, _world_overrides() + list(args.overrides))
        bitsandbytes_only_for_qlora(spec.tuning.modes()["language_model"] == "qlora")
        plan = read_plan(args.plan) if args.plan else None
        if rank == 0:
            from vlaunch_core.writable import check_run_dir_writable

            check_run_dir_writable(spec)
        result = train(spec, quiet=args.quiet, plan=plan)
    except UserError as e:
        print(f"error: {e.render()}", file=sys.stderr)
        return e.exit_code
    dist.destroy()  # not after a failure: tearing down a broken NCCL group can hang
    return EXIT_STOPPED if result.state == "stopped" else 0


def _world_overrides() -> list[str]:
    """Under torchrun the launched world is the truth: plan for it."""
    world = os.environ.get("WORLD_SIZE")
    local = os.environ.get("LOCAL_WORLD_SIZE")
    if world is None or local is None:
        return []
    nodes = max(1, int(world) // max(1, int(local)))
    return [f"resources.nodes={nodes}", f"resources.gpus_per_node={local}"]


if __name__ == "__main__":
    code = main()
    if "WORLD_SIZE" in os.environ:  # a torchrun rank: no finalization (`dist.exit_rank`)
        from trainer.dist import exit_rank

        exit_rank(code)
    raise SystemExit(code)
