"""Golden files: the `vlaunch slurm --dry-run` script for every VILA variant and for hostile
strings, and the generated `slurm/srun_*.sh` entry points.

Regenerate after an intended change with `make golden`
(= `VLAUNCH_REGEN_GOLDEN=1 pytest tests/slurm -k golden`) and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.slurm.render import entrypoint_files, slurm_job_name
from tests.conftest import REPO
from tests.slurm.helpers import GPU_JOB, REGEN, check_golden, cli, job, write_job
from vlaunch_core.models.presets import VARIANTS

HOSTILE_NAME = "x$(touch pwned)'\"; rm -rf ~ #`id`\\"
HOSTILE_JOB = job(
    GPU_JOB,
    name=HOSTILE_NAME,
    **{
        "output.dir": '/shared/runs $(id)/it\'s "quoted" 100%',
        "env": {"EVIL": "$(touch pwned) `id` ' \" \\ ;|&\nsecond line", "PLAIN": "ok"},
        "slurm.partition": "gpu$(id)",
        "slurm.account": "a'b\"c\\d",
        "slurm.qos": "q;touch pwned",
        "slurm.constraint": "a100&(ib|roce)",
        "slurm.container_image": "nvcr.io/x:1$(id)",
        "slurm.container_mounts": ["/data:/data", "/a b:/c'd"],
    },
)
CONTAINER_CHAIN_JOB = job(
    GPU_JOB,
    **{
        "slurm.requeue": "chain",
        "slurm.max_restarts": 5,
        "slurm.signal_seconds": 600,
        "slurm.ray_port": 31000,
        "slurm.container_image": "nvcr.io/nvidia/pytorch:25.01-py3",
        "slurm.container_mounts": ["/lustre:/lustre"],
        "slurm.setup": ["module load cuda/12.4", "export NCCL_IB_HCA=mlx5"],
        "slurm.log_dir": "/shared/logs/vila",
        "slurm.exclusive": True,
        "env": {"HF_HOME": "/lustre/hf"},
    },
)


def _dry_run(tmp_path: Path, data: dict, *flags: str) -> tuple[str, str]:
    spec = write_job(tmp_path / "job.yaml", data)
    rc, out, err = cli("slurm", str(spec), "--dry-run", *flags)
    assert rc == 0, err
    return out, err


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_golden_variant(tmp_path: Path, variant: str) -> None:
    out, _ = _dry_run(tmp_path, GPU_JOB, "--variant", variant, "--nodes", "16")
    check_golden(f"{variant}.sbatch", out)
    subprocess.run(["bash", "-n"], input=out, text=True, check=True)


def test_golden_hostile_strings(tmp_path: Path) -> None:
    out, err = _dry_run(tmp_path, HOSTILE_JOB)
    check_golden("hostile.sbatch", out)
    subprocess.run(["bash", "-n"], input=out, text=True, check=True)
    assert "nothing written" in err

    # Run the script's assignments and exports through bash: the values come out exactly as
    # written and nothing runs (the #SBATCH lines go through the real sbatch in
    # test_cluster_jobs.py::test_sbatch_reads_header_values_exactly).
    prelude = out[: out.index("vlaunch_log() {")]
    probe = (
        prelude
        + 'printf "%s\\0" "$VLAUNCH_SPEC" "$VLAUNCH_PLAN" "$VLAUNCH_SCRIPT" "$EVIL" "$PLAIN"\n'
    )
    proc = subprocess.run(
        ["bash", "-c", probe],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        env={"PATH": os.environ["PATH"], "SLURM_JOB_ID": "7", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    log_dir = f"{HOSTILE_JOB['output']['dir']}/{HOSTILE_NAME}/slurm"
    name = slurm_job_name(HOSTILE_NAME)
    assert proc.stdout.decode().split("\0")[:-1] == [
        f"{log_dir}/{name}.job.yaml",
        f"{log_dir}/{name}.plan.json",
        f"{log_dir}/{name}.sbatch",
        HOSTILE_JOB["env"]["EVIL"],
        "ok",
    ]
    assert list(tmp_path.iterdir()) == [tmp_path / "job.yaml"]  # no `pwned`


def test_golden_container_chain(tmp_path: Path) -> None:
    out, _ = _dry_run(tmp_path, CONTAINER_CHAIN_JOB)
    check_golden("container-chain.sbatch", out)
    subprocess.run(["bash", "-n"], input=out, text=True, check=True)


def test_golden_entrypoints_up_to_date() -> None:
    """slurm/srun_*.sh are generated from slurm/templates/entrypoint.sh.j2, one per variant."""
    slurm_dir = REPO / "slurm"
    expected = entrypoint_files(slurm_dir)
    assert {p.stem for p in expected} == set(VARIANTS)
    if REGEN:
        for path, text in expected.items():
            path.write_text(text)
            path.chmod(0o755)
    stale = [p.name for p, text in expected.items() if not p.exists() or p.read_text() != text]
    assert not stale, f"out of date: {stale}; run `make golden`"
    extra = {p.name for p in slurm_dir.glob("srun_*.sh")} - {p.name for p in expected}
    assert not extra, f"entry points for no variant: {sorted(extra)}"
    for path in expected:
        assert path.stat().st_mode & 0o111, f"{path} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True)


def test_dry_run_imports_no_training_stack(tmp_path: Path) -> None:
    spec = write_job(tmp_path / "job.yaml", GPU_JOB)
    code = (
        "import sys; from launcher.cli import main; "
        f"rc = main(['slurm', {str(spec)!r}, '--dry-run']); "
        "heavy = [m for m in ('torch', 'transformers', 'ray') if m in sys.modules]; "
        "assert not heavy, heavy; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("#!/bin/bash\n#SBATCH --job-name=vila-ft\n")
