"""Tampered, partial and incompatible checkpoints: nothing in them runs, a partial or damaged
one is never taken as the latest (infer/export/eval and resume fall back to the last complete
one, naming what they skipped), a spec the run cannot continue is refused before anything of
the run is written, and a full disk ends the run with one message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.hostile.helpers import TRACEBACK_MARKERS, tree
from tests.trainer.helpers import explain, records, run_trainer, torchrun
from trainer.commit import MANIFEST, build_manifest, inspect, write_manifest
from trainer.host import LocalHost, select_resume
from trainer.rundir import TRAINER_STATE, RunDir, checkpoint_step, write_json_atomic
from trainer.safe_load import scan, torch_load
from trainer.trained import resolve
from vlaunch_core.errors import UserError

pytestmark = pytest.mark.timeout(300, func_only=True)


class Payload:
    """Unpickling this runs `touch MARKER`: the test fails if the marker ever appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path, *, reseal: bool) -> None:
    """Replace `path` with a pickle that runs a command when loaded; `reseal`: rewrite the
    checkpoint's manifest to match (an attacker who knows the format)."""
    torch.save({"state": Payload(marker)}, path)
    if reseal:
        ckpt = next(p for p in (path, *path.parents) if checkpoint_step(p) is not None)
        write_manifest(ckpt, build_manifest(ckpt, checkpoint_step(ckpt) or 0))


def assert_clean_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, explain(proc)
    text = proc.stdout + proc.stderr
    for marker in TRACEBACK_MARKERS:
        assert marker not in text, explain(proc)
    for needle in needles:
        assert needle in proc.stderr, (needle, explain(proc))


# --------------------------------------------------------------------------- the protocol


def _state(step: int) -> dict[str, object]:
    return {
        "step": step, "samples_consumed": step * 8, "total_steps": 10, "global_batch_size": 8,
        "micro_batch_size": 2, "grad_accum_steps": 4, "world_size": 1, "strategy": "ddp",
        "precision": "fp32", "seed": 0,
    }  # fmt: skip


def _fake_run(tmp_path: Path, steps: tuple[int, ...] = (2, 4)) -> RunDir:
    run = RunDir(tmp_path / "run")
    host = LocalHost(run, keep_last=5, rank=0)
    for step in steps:

        def write(folder: Path, step: int = step) -> None:
            (folder / "optimizer.pt").write_bytes(b"o" * (2000 + step))
            write_json_atomic(folder / TRAINER_STATE, _state(step))

        host.save(step, write, {})
    (run.path / "spec.yaml").write_text("name: run\n")
    return run


DAMAGE = {
    "truncated optimizer": lambda c: (c / "optimizer.pt").write_bytes(b"o" * 10),
    "zero-byte optimizer": lambda c: (c / "optimizer.pt").write_bytes(b""),
    "garbage trainer state": lambda c: (c / TRAINER_STATE).write_text("{garbage" + " " * 400),
    "flipped bytes": lambda c: (c / "optimizer.pt").write_bytes(b"X" * 2004),
    "missing file": lambda c: (c / "optimizer.pt").unlink(),
    "planted file": lambda c: (c / "adapter_model.bin").write_bytes(b"pickle"),
    "no manifest": lambda c: (c / MANIFEST).unlink(),
    "garbage manifest": lambda c: (c / MANIFEST).write_text("[1, 2"),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_one(
    tmp_path: Path, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    run = _fake_run(tmp_path)
    newest = run.checkpoint_dir(4)
    damage(newest)  # type: ignore[operator]
    assert not inspect(newest, hashes=True).ok
    assert select_resume(run) == run.checkpoint_dir(2)
    assert run.latest_checkpoint() == run.checkpoint_dir(2)  # listing checks small files' bytes
    assert "checkpoint_000004" in caplog.text


def test_a_run_whose_every_checkpoint_is_damaged_is_refused_not_restarted(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    for step in (2, 4):
        (run.checkpoint_dir(step) / "optimizer.pt").write_bytes(b"")
    before = tree(run.path)
    with pytest.raises(UserError, match="none of its checkpoints is intact"):
        select_resume(run)
    assert tree(run.path) == before


def test_infer_export_and_eval_take_the_last_complete_checkpoint(
    finished_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = finished_run / "runs" / "victim"
    shutil.rmtree(run / "adapter")  # no final export yet: the latest checkpoint is used
    (run / "checkpoint_000002" / "optimizer.pt").write_bytes(b"")
    for which in (None, "latest"):
        trained = resolve(run, which)
        assert trained.step == 1, trained
    assert "checkpoint_000002" in caplog.text and "optimizer.pt" in caplog.text
    with pytest.raises(UserError, match="not a complete checkpoint"):
        resolve(run / "checkpoint_000002")


# --------------------------------------------------------------------------- pickles


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero2", "zero3", "offload"])
def test_a_planted_pickle_in_any_file_of_any_strategy_is_refused(
    strategy_runs: Path, tmp_path: Path, strategy: str
) -> None:
    """Every file of the checkpoint in turn (DeepSpeed's `deepspeed/` files included): with
    the manifest left as it was the checkpoint is damaged (skipped, the file named); with the
    manifest rewritten to match, the weights-only scan refuses it, and so does the loader
    DeepSpeed is given. The payload never runs."""
    source = strategy_runs / f"run_{strategy}"
    files = sorted(p.relative_to(source / "checkpoint_000003") for p in
                   (source / "checkpoint_000003").rglob("*") if p.is_file())  # fmt: skip
    assert any(str(f).startswith("deepspeed/") for f in files) == strategy.startswith(
        ("zero", "off")
    )
    marker = tmp_path / "PWNED"
    for rel in files:
        if rel.name == MANIFEST:
            continue
        for reseal in (False, True):
            work = tmp_path / "work"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(source, work)
            ckpt = work / "checkpoint_000003"
            plant(ckpt / rel, marker, reseal=reseal)
            if not reseal:
                found = inspect(ckpt, hashes=True)
                assert found.verdict == "damaged" and str(rel) in found.reason, (rel, found)
                with pytest.raises(UserError, match="none of its checkpoints is intact"):
                    select_resume(RunDir(work))
            elif rel.suffix == ".pt":
                with pytest.raises(UserError, match=f"{rel.name}: refused"):
                    scan(ckpt)
                with pytest.raises(UserError, match="refused"):
                    torch_load(ckpt / rel)
            assert not marker.exists(), rel


@pytest.mark.slow
def test_a_zero2_resume_refuses_the_planted_model_states_file(
    strategy_runs: Path, tmp_path: Path
) -> None:
    """The exploit of the report, end to end: a pickle in `mp_rank_00_model_states.pt`
    (manifest rewritten to match) ran on resume and the run finished with exit 0."""
    work = tmp_path / "runs"
    shutil.copytree(strategy_runs / "run_zero2", work / "run_zero2")
    job = strategy_runs.parent / "single.yaml"
    target = work / "run_zero2" / "checkpoint_000003" / "deepspeed" / "state"
    marker = tmp_path / "PWNED"
    plant(target / "mp_rank_00_model_states.pt", marker, reseal=True)
    before = tree(work)
    proc = torchrun(
        "-m", "trainer.run", str(job), "name=run_zero2", "train.strategy=zero2",
        "train.max_steps=4", f"output.dir={work}", "--quiet",
        cwd=job.parent, nproc=2, timeout=600,
    )  # fmt: skip
    assert proc.returncode != 0, explain(proc)
    assert "mp_rank_00_model_states.pt: refused" in proc.stderr, explain(proc)
    assert "Traceback" not in proc.stderr.split("mp_rank_00_model_states.pt: refused")[0][-200:]
    assert not marker.exists()
    assert tree(work) == before  # refused before the run was touched


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["tuning.lora.r=8"], ["tuning.lora.r", "16", "8"]),
        (["tuning.preset=lora_vt_llm"], ["tuning.vision_tower"]),
        (["train.strategy=fsdp"], ["train.strategy"]),
        (["train.optimizer=sgd"], ["train.optimizer"]),
        (["train.global_batch_size=8"], ["train.global_batch_size"]),
        (["tuning.lora.alpha=7", "tuning.lora.use_dora=true"], ["alpha", "use_dora"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_spec_the_run_cannot_continue_is_refused_before_anything_is_written(
    finished_run: Path, overrides: list[str], needles: list[str]
) -> None:
    """`tuning.lora.r=8` on an r=16 run: a 218-line traceback after Ray's retries, the run
    marked failed, its spec.yaml and plan.json rewritten with r=8."""
    run = finished_run / "runs"
    before = tree(run)
    proc = run_trainer(finished_run / "victim.yaml", *overrides, "train.max_steps=3")
    assert_clean_failure(proc, "cannot continue run 'victim'", *needles)
    assert tree(run) == before


def test_raising_max_steps_resumes_on_the_new_schedule(finished_run: Path) -> None:
    """A finished cosine run (its LR decayed to 0) given more steps: the first resumed step
    trained at LR 0 (the saved optimizer's value) instead of the new schedule's."""
    from trainer.schedule import lr_factor

    run = finished_run / "runs" / "victim"
    proc = run_trainer(finished_run / "victim.yaml", "train.max_steps=4")
    assert proc.returncode == 0, explain(proc)
    assert records(run, "resume")[-1]["step"] == 2
    lrs = {r["step"]: r["lr"] for r in records(run)}
    for step in (3, 4):  # the LR of update `step` is the new schedule's at index step - 1
        expected = 2e-3 * lr_factor(step - 1, kind="cosine", warmup=1, total=4)
        assert lrs[step] == pytest.approx(expected, rel=1e-9), lrs


def test_a_resume_falls_back_past_a_damaged_checkpoint(finished_run: Path) -> None:
    """A truncated optimizer.pt in the newest checkpoint: a 185-line traceback, retried, no
    fallback. Now the resume takes the one before, naming the file; the damaged folder is
    kept aside for inspection."""
    run = finished_run / "runs" / "victim"
    (run / "checkpoint_000002" / "optimizer.pt").write_bytes(b"")
    proc = run_trainer(finished_run / "victim.yaml", "train.max_steps=3")
    assert proc.returncode == 0, explain(proc)
    assert "checkpoint_000002" in proc.stderr and "optimizer.pt" in proc.stderr
    assert records(run, "resume")[-1]["step"] == 1
    assert (run / "checkpoint_000002.damaged" / "optimizer.pt").stat().st_size == 0
    assert inspect(run / "checkpoint_000003").ok
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path, finished_run: Path) -> object:
    """A real filesystem (tmpfs; root only) with room for two and a half of the tiny run's
    checkpoints, sized from the finished run's first one: the third does not fit.
    Unmounted after."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    first = finished_run / "runs" / "victim" / "checkpoint_000001"
    one = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
    size_kib = int(2.5 * one / 1024) + 64  # + the run's logs and status
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount)],
                          check=False, capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def assert_failed_cleanly(run: Path, step: int) -> None:
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["step"] == step, status
    assert "No space left on device" in status["error"]
    empty = [str(p) for p in run.rglob("*") if p.is_file() and p.stat().st_size == 0]
    assert empty == [], empty
    assert not list(run.glob(".*.tmp")) and not list(run.glob(".checkpoint_*"))
    assert [c.name for c in RunDir(run).checkpoints()] == ["checkpoint_000001", "checkpoint_000002"]


def test_disk_full_during_a_save_ends_with_one_message(
    finished_run: Path, small_disk: Path
) -> None:
    """ENOSPC during a save (a real full filesystem): one error naming the path, status.json
    failed at the last good step, no 0-byte or temporary files; infer/export take the last
    complete checkpoint, and the run resumes from it once there is room."""
    job = finished_run / "victim.yaml"
    proc = run_trainer(job, "name=full", f"output.dir={small_disk}", "train.max_steps=6",
                       "output.export=none")  # fmt: skip
    assert_clean_failure(proc, "No space left on device", str(small_disk))
    assert proc.stderr.count("error:") == 1
    run = small_disk / "full"
    assert_failed_cleanly(run, 2)
    assert resolve(run, "latest").step == 2
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    again = run_trainer(job, "name=full", f"output.dir={small_disk}", "train.max_steps=6",
                        "output.export=none")  # fmt: skip
    assert again.returncode == 0, explain(again)
    assert [r["step"] for r in records(run, "resume")] == [2]


@pytest.mark.ray
@pytest.mark.timeout(600, func_only=True)
def test_disk_full_under_ray_ends_with_one_message_and_no_retry(
    finished_run: Path, small_disk: Path
) -> None:
    """The report's case: under Ray the partial checkpoint stayed under its final name with
    0-byte files and was taken as the latest, status.json stayed "running", the worker group
    was retried 4 times."""
    from tests.e2e.helpers import vlaunch

    job = finished_run / "victim.yaml"
    proc = vlaunch("local", str(job), "--workers", "1", "--no-plan", "name=full",
                   f"output.dir={small_disk}", "train.max_steps=6", "output.export=none",
                   cwd=finished_run, timeout=500)  # fmt: skip
    assert proc.returncode == 2, explain(proc)
    assert "No space left on device" in proc.stderr and str(small_disk) in proc.stderr
    assert proc.stderr.count("error: ") == 1, explain(proc)
    assert "Error in training function" not in proc.stderr, explain(proc)
    run = small_disk / "full"
    assert_failed_cleanly(run, 2)
    assert resolve(run, "latest").step == 2


def test_payload_marker_helper_really_runs(tmp_path: Path) -> None:
    """The payload of these tests is live: an unsafe load does run it."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "payload.pt"
    torch.save({"x": Payload(marker)}, path)
    unsafe = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", unsafe], check=True)
    assert marker.exists()
