"""Train one job under several strategies in ONE torchrun launch (process start-up is most of
the cost of a tiny run): `torchrun --nproc_per_node 2 strategy_runs.py JOB.yaml ddp fsdp ...`.
Each strategy's run is named `run_<strategy>` and uses the chunked loss (the job's own run, the
reference, the plain loss over full logits)."""

from __future__ import annotations

import sys

from trainer.loop import train
from vlaunch_core.spec_load import load_spec


def main() -> None:
    job, *strategies = sys.argv[1:]
    for strategy in strategies:
        overrides = [f"name=run_{strategy}", f"train.strategy={strategy}", "train.loss=chunked"]
        spec = load_spec(job, overrides)
        result = train(spec, quiet=True)
        assert result.state == "finished", result


if __name__ == "__main__":
    main()
    from trainer.dist import exit_rank

    exit_rank(0)  # a torchrun rank: no finalization (see exit_rank)
