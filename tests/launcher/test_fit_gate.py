"""The fit gate of the launch pipeline, for every backend.

Issue 15's case: LLaVA-1.5 13B, full fine-tuning with DDP on 8x A100-40GB. `vlaunch plan`
predicts 251.6 GiB per device and exits 1; every launch of it (local, Slurm, Kubernetes,
dry-run or not) must be refused the same way, with exactly the same error, before anything
is written, started or submitted. (The real local Slurm cluster sees the same refusal in
tests/slurm/test_cluster_jobs.py.)
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from launcher.k8s.backend import KubernetesBackend
from launcher.slurm.backend import SlurmBackend
from launcher.slurm.submit import run_command
from tests.k8s.fakeapi import FakeKubeAPI
from tests.k8s.helpers import run_cli
from vlaunch_core.plan import PlanDoesNotFit

BIG_JOB = {
    "name": "llava-13b-fft",
    "model": {"name_or_path": "llava-hf/llava-1.5-13b-hf"},
    "data": {
        "mixture": "shapes",
        "datasets": {"shapes": {"data_path": "/workspace/data/shapes/train.json"}},
    },
    "tuning": {"preset": "fft"},
    "train": {"global_batch_size": 64, "strategy": "ddp"},
    "resources": {"profile": "a100-40gb", "nodes": 1, "gpus_per_node": 8},
    "output": {"dir": "runs"},
    "slurm": {"partition": "gpu"},
    "k8s": {"namespace": "ml", "image": "registry.example.com/ml/vlaunch:0.1.0-cuda"},
}


@pytest.fixture
def big_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The job, alone in a fresh working directory (where `runs/` would appear)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(BIG_JOB, sort_keys=False))
    return path


@pytest.fixture
def plan_error(big_job: Path) -> str:
    """What `vlaunch plan` prints on stderr for the job, after the table (exit status 1)."""
    code, out, err = run_cli(["plan", str(big_job)])
    assert code == 1 and "does not fit" in out  # the table's verdict
    # the predicted total is the one the table printed for the device (whatever the estimator)
    total = re.search(r"([\d.]+) GiB predicted", err)
    assert total is not None and f"{total.group(1)} GiB" in out, err
    assert err.startswith(
        "error: the plan for 'llava-13b-fft' on 1 node(s) x 8 x a100-40gb: does not fit: "
        f"{total.group(1)} GiB predicted > 36.0 GiB usable"
    ), err
    return err


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    server = FakeKubeAPI(namespaces=("ml",), kuberay=True).start()
    yield server
    server.stop()


def nothing_written(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir()) == ["job.yaml"]


def test_plan_json_is_one_document_that_says_why(big_job: Path, plan_error: str) -> None:
    code, out, _ = run_cli(["plan", str(big_job), "--json"])
    plan = json.loads(out)
    assert code == 1 and plan["fits"] is False
    (reason,) = plan["plan_notes"]
    assert reason in plan_error


@pytest.mark.parametrize(
    "argv",
    [
        ["slurm"],
        ["slurm", "--dry-run"],
        ["slurm", "--variant", "srun_fft_grouped", "--dry-run"],
        ["k8s", "--dry-run"],
        ["k8s", "--print-values"],
        ["local"],
        ["local", "--dry-run"],
        ["local", "--no-plan"],
    ],
    ids=" ".join,
)
def test_every_launch_is_refused_with_the_plans_error(
    big_job: Path, plan_error: str, argv: Sequence[str]
) -> None:
    code, out, err = run_cli([argv[0], str(big_job), *argv[1:]])
    assert (code, out, err) == (1, "", plan_error)
    nothing_written(big_job.parent)


def test_the_slurm_dry_run_prints_no_script(big_job: Path, plan_error: str) -> None:
    """Before the pipeline, `vlaunch slurm --dry-run` printed this job's script, exit 0."""
    code, out, err = run_cli(["slurm", str(big_job), "--dry-run", "--nodes", "1"])
    assert code == 1 and "#!/bin/bash" not in out and err == plan_error
    # the same job that fits (LoRA) renders
    code, out, _ = run_cli(["slurm", str(big_job), "--dry-run", "tuning.preset=lora_llm"])
    assert code == 0 and out.startswith("#!/bin/bash\n")


def test_slurm_runs_no_slurm_command(big_job: Path, plan_error: str) -> None:
    """Through the backend with the real command runner, recorded: no Slurm command runs."""
    ran: list[list[str]] = []

    def runner(argv: Sequence[str]) -> object:
        ran.append(list(argv))
        return run_command(argv)

    with pytest.raises(PlanDoesNotFit) as caught:
        SlurmBackend(runner=runner).submit(big_job)  # type: ignore[arg-type]
    assert f"error: {caught.value.render()}\n" == plan_error
    assert ran == []
    nothing_written(big_job.parent)


def test_kubernetes_creates_nothing(
    big_job: Path, plan_error: str, api: FakeKubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = big_job.parent / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    code, out, err = run_cli(["k8s", str(big_job)])
    assert (code, out, err) == (1, "", plan_error)
    assert api.requests == []  # not even a read: refused before talking to the cluster

    config = client.Configuration()
    config.host = api.url
    with pytest.raises(PlanDoesNotFit):
        KubernetesBackend(api_client=client.ApiClient(config)).submit(big_job)
    assert api.requests == [] and api.objects == {}


def test_local_starts_no_ray(big_job: Path) -> None:
    """`--workers 2` is `resources.profile=cpu resources.gpus_per_node=2`: the same error as
    `vlaunch plan` with those overrides, and Ray is never imported."""
    overrides = ["resources.profile=cpu", "resources.gpus_per_node=2"]
    code, _, expected = run_cli(["plan", str(big_job), *overrides])
    assert code == 1
    already = "ray" in sys.modules  # another test of this process may have imported it
    code, out, err = run_cli(["local", str(big_job), "--workers", "2"])
    assert (code, out, err) == (1, "", expected)
    assert ("ray" in sys.modules) is already
    nothing_written(big_job.parent)
