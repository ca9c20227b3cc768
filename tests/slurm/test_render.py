"""`vlaunch slurm` without a cluster: flags, variants, checks that run before submitting."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from launcher.backends import BACKENDS, backend_for, backend_of
from launcher.cli import build_parser
from launcher.commands.slurm import spec_from_args
from launcher.slurm import control
from launcher.slurm.render import build_request, check_spec, sbatch_quote, slurm_job_name
from launcher.slurm.submit import Runner, SlurmCommandError, parse_job_id
from tests.slurm.helpers import GPU_JOB, cli, job, write_job
from vlaunch_core.errors import UserError
from vlaunch_core.plan import make_plan
from vlaunch_core.slurm_options import SlurmOptions, time_limit_seconds


def _spec(tmp_path: Path, data: dict, *argv: str):  # type: ignore[no-untyped-def]
    path = write_job(tmp_path / "job.yaml", data)
    args, extra = build_parser().parse_known_args(["slurm", str(path), *argv])
    args.overrides = extra
    return spec_from_args(args)


def test_every_slurm_option_has_a_flag() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["slurm"]  # type: ignore[attr-defined]
    flags = {opt for action in sub._actions for opt in action.option_strings}
    for name in SlurmOptions.model_fields:
        assert "--" + name.replace("_", "-") in flags, name
    for flag in ("--nodes", "--gpus-per-node", "--dry-run", "--variant", "--container-image"):
        assert flag in flags


def test_flags_become_typed_spec_values(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        GPU_JOB,
        "--time",
        "10",
        "--account",
        "123",
        "--exclusive",
        "--max-restarts",
        "5",
        "--requeue",
        "chain",
        "--container-mounts",
        "/a:/a",
        "--container-mounts",
        "/b c:/d",
        "--partition",
        "x: y",
    )
    s = spec.slurm
    assert (s.time, s.account, s.exclusive, s.max_restarts, s.requeue) == (
        "10",
        "123",
        True,
        5,
        "chain",
    )
    assert s.container_mounts == ["/a:/a", "/b c:/d"]
    assert s.partition == "x: y"


def test_variant_sets_preset_and_grouping_in_the_resolved_spec(tmp_path: Path) -> None:
    spec = _spec(tmp_path, GPU_JOB, "--variant", "srun_ln_vt_lora_llm_grouped")
    resolved = yaml.safe_load(build_request(spec, make_plan(spec)).spec_yaml)
    assert resolved["tuning"]["preset"] == "ln_vt_lora_llm"
    assert resolved["data"]["group_by_length"] is True
    assert resolved["slurm"]["variant"] == "srun_ln_vt_lora_llm_grouped"
    plain = _spec(tmp_path, GPU_JOB, "--variant", "srun_lora_llm")
    assert plain.tuning.preset == "lora_llm" and plain.data.group_by_length is False


def test_variant_in_the_spec_file_applies_too(tmp_path: Path) -> None:
    spec = _spec(tmp_path, job(GPU_JOB, **{"slurm.variant": "srun_fft_vt"}))
    assert spec.tuning.preset == "fft_vt"


def test_variant_contradicted_by_an_override_is_an_error(tmp_path: Path) -> None:
    spec = write_job(tmp_path / "job.yaml", GPU_JOB)
    rc, _, err = cli(
        "slurm", str(spec), "--dry-run", "--variant", "srun_fft_grouped", "tuning.preset=lora_llm"
    )
    assert rc == 2 and "contradicts --variant srun_fft_grouped" in err


def test_unknown_variant_suggests_the_nearest(tmp_path: Path) -> None:
    spec = write_job(tmp_path / "job.yaml", GPU_JOB)
    rc, _, err = cli("slurm", str(spec), "--dry-run", "--variant", "srun_lora_lm")
    assert rc == 2 and "srun_lora_llm" in err


def test_no_sbatch_fails_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    spec = write_job(tmp_path / "job.yaml", job(GPU_JOB, **{"output.dir": str(tmp_path / "r")}))
    rc, out, err = cli("slurm", str(spec))
    assert rc == 2 and out == ""
    assert "`sbatch` is not on PATH" in err and "--dry-run" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("changes", "where", "words"),
    [
        ({"resources.profile": "auto"}, "resources.profile", "not the cluster's"),
        (
            {"slurm.time": "00:05:00", "slurm.signal_seconds": 300},
            "slurm.signal_seconds",
            "before the job starts",
        ),
        ({"env": {"BAD KEY": "x"}}, "env", "'BAD KEY': not an environment variable"),
        ({"slurm.partition": "gpu\n#SBATCH --x"}, "slurm.partition", "control character"),
        ({"output.dir": "s3://bucket/runs"}, "slurm.log_dir", "Slurm logs need a path"),
    ],
)
def test_render_rejects(tmp_path: Path, changes: dict, where: str, words: str) -> None:
    # refused either when the spec is read (env keys) or when the job is checked for Slurm
    with pytest.raises(UserError) as info:
        check_spec(_spec(tmp_path, job(GPU_JOB, **changes)))
    assert where in str(info.value) and words in str(info.value)


def test_in_allocation_needs_a_slurm_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    spec = write_job(tmp_path / "job.yaml", GPU_JOB)
    rc, _, err = cli("slurm", str(spec), "--in-allocation")
    assert rc == 2 and "SLURM_JOB_ID is not set" in err


def test_cpu_profile_requests_no_gpus(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        job(
            GPU_JOB,
            **{
                "resources.profile": "cpu",
                "resources.gpus_per_node": 2,
                "slurm.cpus_per_task": 8,
                "train.global_batch_size": 4,
            },
        ),
    )
    script = build_request(spec, make_plan(spec)).script
    assert "--gpus-per-node" not in script and "#SBATCH --cpus-per-task=8" in script
    assert "export OMP_NUM_THREADS=4" in script and "--num-gpus=0" in script


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10", 600),
        ("10:30", 630),
        ("1:00:00", 3600),
        ("2-0", 172800),
        ("1-2:3", 93780),
        ("1-00:00:01", 86401),
    ],
)
def test_time_limit_seconds(value: str, seconds: int) -> None:
    assert time_limit_seconds(value) == seconds


def test_job_names_are_normalised_and_bounded() -> None:
    assert slurm_job_name("vila-ft_1.5") == "vila-ft_1.5"
    odd = slurm_job_name("x$(id) y")
    assert odd.startswith("x-id-y-") and len(odd) == len("x-id-y-") + 8
    assert odd != slurm_job_name("x$(id)_y")
    assert len(slurm_job_name("a" * 100)) == 64


def test_sbatch_quote_leaves_plain_values_alone() -> None:
    assert sbatch_quote("gpu,debug") == "gpu,debug"
    assert sbatch_quote('a "b"\\') == '"a \\"b\\"\\\\"'


def test_job_handles() -> None:
    assert backend_of("slurm:12") == backend_of("12") == "slurm"
    assert backend_of("k8s:ns/run") == "k8s"
    for bad in ("12a", "lsf:1", "slurm:"):
        with pytest.raises(UserError):
            backend_of(bad)
    with pytest.raises(UserError, match="not a Slurm job handle"):
        control.parse_job_id("slurm:abc")


def test_missing_kubernetes_support_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stands for an install without launcher/k8s/backend.py (it exists in this checkout).
    monkeypatch.setitem(BACKENDS, "k8s", "launcher.k8s.not_installed:KubernetesBackend")
    with pytest.raises(UserError, match="Kubernetes support is not installed"):
        backend_for("k8s:ns/run")


def test_scontrol_fields_keep_spaces_in_values() -> None:
    line = (
        "JobId=18 JobName=na me|x UserId=root(0) JobState=RUNNING Restarts=2 "
        "ExitCode=0:0 StdErr=/a b/x-18.out StdIn=/dev/null StdOut=/a b/x-18.out Power= "
    )
    fields = control.scontrol_fields(line)
    assert fields["JobName"] == "na me|x" and fields["StdOut"] == "/a b/x-18.out"
    assert fields["Restarts"] == "2" and fields["Power"] == ""


def _recorded(stdout: str, rc: int = 0, stderr: str = "") -> Runner:
    """A recorded runner: no real Slurm prints malformed output on demand."""
    return lambda argv: subprocess.CompletedProcess(list(argv), rc, stdout, stderr)


def test_unparsable_output_is_shown_raw() -> None:
    with pytest.raises(SlurmCommandError) as info:
        control.status("slurm:5", runner=_recorded("garbage without separators\n"))
    assert "garbage without separators" in str(info.value) and "squeue" in str(info.value)
    with pytest.raises(SlurmCommandError, match="Submitted batch job 7"):
        parse_job_id(subprocess.CompletedProcess(["sbatch"], 0, "Submitted batch job 7\n", ""))
    assert parse_job_id(subprocess.CompletedProcess(["sbatch"], 0, "7;cluster\n", "")) == "7"


def test_forgotten_job_without_accounting() -> None:
    # squeue and sacct as they answer on a cluster without accounting, for a purged job.
    runner = _recorded("", 1, "slurm_load_jobs error: Invalid job id specified")
    with pytest.raises(UserError, match="does not know job 9"):
        control.status("9", runner=runner)


def test_the_submitted_spec_loads_back_unchanged(tmp_path: Path) -> None:
    """`vlaunch run` loads the spec file the job script names: it must validate again and
    mean the same job (output.dir made absolute)."""
    from vlaunch_core.spec_load import load_spec

    spec = _spec(
        tmp_path,
        job(GPU_JOB, **{"output.dir": "rel/runs"}),
        "--variant",
        "srun_fft_grouped",
        "--nodes",
        "4",
        "train.lr=3e-4",
    )
    request = build_request(spec, make_plan(spec))
    path = tmp_path / "written.yaml"
    path.write_text(request.spec_yaml)
    again = load_spec(path)
    expected = spec.model_copy(deep=True)
    expected.output.dir = str(Path("rel/runs").absolute())
    assert again.model_dump() == expected.model_dump()
    assert again.tuning.preset == "fft" and again.resources.nodes == 4


def test_the_script_hands_the_launch_plan_to_vlaunch_run(tmp_path: Path) -> None:
    """The plan written beside the job spec is `vlaunch plan --json`'s, for the same flags,
    and the script passes it to `vlaunch run --plan`."""
    spec_file = write_job(tmp_path / "job.yaml", GPU_JOB)
    flags = ["--nodes", "4", "--gpus-per-node", "4", "train.global_batch_size=64"]
    rc, script, err = cli("slurm", str(spec_file), "--dry-run", *flags)
    assert rc == 0, err
    request = build_request(*_spec_and_plan(tmp_path, *flags))
    assert request.plan_path == request.spec_path.with_name("vila-ft.plan.json")
    assert list(request.files) == [request.spec_path, request.plan_path, request.script_path]
    assert f"#   write {request.plan_path}" in err
    assert f"VLAUNCH_PLAN={request.plan_path}\n" in script
    assert '--ray-address "$VLAUNCH_RAY_ADDRESS" \\\n    --plan "$VLAUNCH_PLAN" &' in script
    rc, planned, err = cli("plan", str(spec_file), "--json", *flags)
    assert rc == 0, err
    assert request.plan_json == planned  # byte for byte
    assert json.loads(planned)["world_size"] == 16


def _spec_and_plan(tmp_path: Path, *argv: str):  # type: ignore[no-untyped-def]
    spec = _spec(tmp_path, GPU_JOB, *argv)
    return spec, make_plan(spec)
