"""`vlaunch run --plan PLAN.json` trains with the plan it is handed, not a new one.

The handed plan is what the launch checked (the fit gate applies to it too); only without
`--plan` (a hand-written job script) does `vlaunch run` plan by itself. These cases end
before a Ray cluster is needed; tests/e2e and tests/slurm run the driver for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.k8s.helpers import run_cli

JOB = {
    "name": "handover",
    "model": {"name_or_path": "tiny:llava"},
    "data": {"mixture": "shapes", "datasets": {"shapes": {"data_path": "/data/train.json"}}},
    "train": {"global_batch_size": 8},
    "resources": {"profile": "cpu", "gpus_per_node": 2},
}
#: The same run planned as a 13B full fine-tune on 8x A100-40GB: it does not fit.
TOO_BIG = [
    "model.name_or_path=llava-hf/llava-1.5-13b-hf",
    "tuning.preset=fft",
    "resources.profile=a100-40gb",
    "resources.gpus_per_node=8",
]
NO_CLUSTER = ["--ray-address", "127.0.0.1:1", "--wait-for-workers", "0"]


@pytest.fixture
def job(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(JOB))
    return path


def write_plan(job: Path, *overrides: str) -> tuple[Path, str]:
    """`vlaunch plan --json` of the job, saved as a launch saves it; and the error
    `vlaunch plan` prints after its table (empty when the plan fits)."""
    _, out, _ = run_cli(["plan", str(job), "--json", *overrides])
    path = job.with_name("plan.json")
    path.write_text(out)
    _, _, err = run_cli(["plan", str(job), *overrides])
    return path, err


def test_the_handed_plan_is_used_and_gated(job: Path) -> None:
    """The spec alone fits (planned here, the run would go on to look for its cluster); the
    handed plan does not, and `vlaunch run` refuses it with the plan's own error."""
    plan, plan_error = write_plan(job, *TOO_BIG)
    assert json.loads(plan.read_text())["fits"] is False and plan_error
    code, out, err = run_cli(["run", str(job), "--plan", str(plan), *NO_CLUSTER])
    assert (code, out, err) == (1, "", plan_error)


def test_a_plan_of_another_run_is_refused(job: Path) -> None:
    plan, _ = write_plan(job, "name=other")
    code, _, err = run_cli(["run", str(job), "--plan", str(plan), *NO_CLUSTER])
    assert code == 2 and "the plan is for the run 'other'" in err


def test_a_missing_plan_file_is_a_user_error(job: Path) -> None:
    code, _, err = run_cli(["run", str(job), "--plan", str(job.with_name("nope.json"))])
    assert code == 2 and "no such plan file" in err
