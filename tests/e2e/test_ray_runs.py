"""Ray Train hosting end to end: a worker SIGKILLed mid-run, and a graceful stop with resume.

Each test starts a real Ray cluster (`vlaunch local`, or `ray start --head` + `vlaunch run`)
with two CPU workers and trains the tiny LLaVA (DDP, gloo, fp32).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.e2e.helpers import ray_head, vlaunch, vlaunch_background
from tests.trainer.helpers import (
    explain,
    max_abs_diff,
    records,
    run_trainer,
    trained_weights,
    wait_for_step,
    write_job,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_worker_killed_mid_run_recovers_through_failure_config(
    tmp_path: Path, shapes_data: Path
) -> None:
    job = write_job(tmp_path / "ray", shapes_data, name="run", train={"max_failures": 1})
    proc = vlaunch(
        "local", str(job), "--workers", "2", "--no-plan", cwd=job.parent, VLAUNCH_FAULT="kill:1:3"
    )
    assert proc.returncode == 0, explain(proc)
    run = job.parent / "runs" / "run"
    assert (run / ".fault-kill-1-3").is_file()  # rank 1 was SIGKILLed after step 3
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["step"]) == ("finished", 6)
    assert [r["step"] for r in records(run, "resume")] == [2]  # restarted from checkpoint 2
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoint_manager_snapshot.json").is_file()  # Ray's own bookkeeping

    # The Ray-hosted, killed and restarted run equals the same job run straight by torchrun.
    plain = write_job(tmp_path / "plain", shapes_data, name="run")
    straight = run_trainer(plain, nproc=2)
    assert straight.returncode == 0, explain(straight)
    diff = max_abs_diff(
        trained_weights(run / "checkpoint_000006"),
        trained_weights(plain.parent / "runs" / "run" / "checkpoint_000006"),
    )
    print(f"\nmax abs diff, Ray run with a killed worker vs torchrun straight run: {diff:.3g}")
    assert diff <= 1e-6


def test_sigint_to_vlaunch_run_checkpoints_exits_75_and_resumes(
    tmp_path: Path, shapes_data: Path
) -> None:
    steps = 60
    job = write_job(
        tmp_path,
        shapes_data,
        name="stopme",
        train={
            "max_steps": steps,
            "checkpoint_every": 1000,
            "global_batch_size": 16,
            "micro_batch_size": 4,
        },
    )
    run = tmp_path / "runs" / "stopme"
    home = {"HOME": str(tmp_path)}  # Ray's auth token of this cluster lives under $HOME/.ray
    with ray_head(2, tmp_path, tmp_path) as address:
        driver = vlaunch_background(
            "run",
            str(job),
            "--ray-address",
            address,
            "--wait-for-workers",
            "120",
            cwd=tmp_path,
            **home,
        )
        try:
            wait_for_step(run, 2, driver, timeout=300)
            driver.send_signal(signal.SIGINT)
            out, _ = driver.communicate(timeout=300)
        finally:
            if driver.poll() is None:
                driver.kill()
        assert driver.returncode == 75, out[-5000:]
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "stopped" and 2 <= status["step"] < steps, status
        stopped_at = status["step"]
        state = json.loads(
            (run / f"checkpoint_{stopped_at:06d}" / "trainer_state.json").read_text()
        )
        assert state["stopped"] is True and state["step"] == stopped_at
        assert not (run / "STOP").exists()

        again = vlaunch("run", str(job), "--ray-address", address, cwd=tmp_path, **home)
    assert again.returncode == 0, explain(again)
    assert [r["step"] for r in records(run, "resume")] == [stopped_at]
    assert [r["step"] for r in records(run)] == list(range(1, steps + 1))
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_bad_data_is_a_user_error_not_retried(tmp_path: Path, shapes_data: Path) -> None:
    import shutil

    data = tmp_path / "broken"
    shutil.copytree(shapes_data, data)
    first_image = json.loads((data / "train.json").read_text())[0]["image"]
    (data / first_image).unlink()
    job = write_job(tmp_path, data, name="bad", train={"max_failures": 3})
    proc = vlaunch("local", str(job), "--workers", "2", "--no-plan", cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert "error: the train data has problems" in proc.stderr
    assert first_image in proc.stderr
    assert "ProblemReport" not in proc.stderr  # printed as a user error, no traceback of it
    assert "Error count" not in proc.stdout + proc.stderr  # FailureConfig did not retry it
    status = json.loads((tmp_path / "runs" / "bad" / "status.json").read_text())
    assert status["state"] == "failed"


def test_vlaunch_local_trains_on_tar_shards(tmp_path: Path, tiny_llava: Path) -> None:
    """The CLI path on a sharded source: `vlaunch local` (Ray, two workers) trains on the
    shapes written as WebDataset shards (`data synth --formats webdataset`, wids index)."""
    from vlaunch_core.data.synth import SynthSizes, synthesize

    shapes = tmp_path / "shapes"
    synthesize(shapes, SynthSizes(train=96, eval=8, video_train=0, video_eval=0), seed=3,
               formats=("webdataset",))  # fmt: skip
    shards = {"data_path": str(shapes / "shards" / "train.wids.json"), "source": "webdataset"}
    job = write_job(
        tmp_path, shapes, name="tar", data={"datasets": {"tar": shards}, "mixture": "tar"},
        train={"max_steps": 3, "checkpoint_every": 3},
    )  # fmt: skip
    proc = vlaunch("local", str(job), "--workers", "2", "--no-plan", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    run = tmp_path / "runs" / "tar"
    assert [r["step"] for r in records(run)] == [1, 2, 3]
    assert all(r["target_tokens"] > 0 for r in records(run))
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
