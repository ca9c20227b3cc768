"""What a job asks of each node (CPUs, memory, whole nodes): sized for its GPUs, never more
than a node has (the profile's in a dry-run, the partition's smallest as `sinfo` describes it
on submission), a value the user set kept or refused with the numbers; pyxis containers
named so that each node imports the image once per job."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launcher.slurm.render import container_name
from launcher.slurm.resources import NodeLimits, node_request, parse_sinfo
from launcher.slurm.submit import partition_limits, run_command
from tests.slurm.helpers import CPU_JOB, GPU_JOB, cli, job, write_job
from vlaunch_core.errors import UserError
from vlaunch_core.plan import make_plan
from vlaunch_core.spec_load import spec_from_dict

SINFO = """\
gpu*|dgx01|256|2063000
gpu*|dgx02|256|2063000
gpu*|hgx03|192|1031000
small|node01|64|515000
debug|node01|64|515000
"""


def request(data: dict, node: NodeLimits | None = None):  # type: ignore[no-untyped-def]
    spec = spec_from_dict(data, check=False)
    return node_request(spec, make_plan(spec), node)


def test_defaults_are_sized_for_the_gpus_not_the_node() -> None:
    asked = request(job(GPU_JOB, **{"resources.profile": "a100-80gb"}))
    assert (asked.cpus, asked.mem, asked.exclusive, asked.notes) == (64, "800G", False, ())


def test_exclusive_takes_all_of_the_nodes_memory() -> None:
    asked = request(job(GPU_JOB, **{"slurm.exclusive": True}))
    assert (asked.mem, asked.exclusive) == ("0", True)


def test_defaults_never_exceed_the_profiles_node() -> None:
    """rtx3090ti: 2 GPUs, 16 cores, 64 GiB per node: 90% of it at most."""
    asked = request(job(GPU_JOB, **{"resources.profile": "rtx3090ti"}))
    assert (asked.cpus, asked.mem) == (14, "57G")
    assert asked.notes == (
        "--cpus-per-task=14: 16 would exceed the rtx3090ti profile's node (90%)",
        "--mem=57G: 200G would exceed the rtx3090ti profile's node (90%)",
    )


def test_defaults_fit_the_partitions_smallest_node() -> None:
    node = parse_sinfo(SINFO, "small")
    assert node == NodeLimits("small", 64, 515000, ("node01",))
    asked = request(job(GPU_JOB, **{"slurm.cpus_per_gpu": 12}), node)
    assert (asked.cpus, asked.mem) == (64, "515000M")
    assert "the smallest node of partition small" in asked.notes[0]


def test_a_value_the_user_set_is_kept_or_refused_with_the_numbers() -> None:
    node = NodeLimits("small", 64, 515000, ("node01",))
    kept = request(job(GPU_JOB, **{"slurm.cpus_per_task": 48, "slurm.mem": "256G"}), node)
    assert (kept.cpus, kept.mem, kept.notes) == (48, "256G", ())
    with pytest.raises(UserError) as caught:
        request(job(GPU_JOB, **{"slurm.cpus_per_task": 128}), node)
    assert caught.value.message == (
        "slurm.cpus_per_task asks for 128 CPUs per node, but the smallest node of partition "
        "'small' has 64 CPUs (node01)"
    )
    with pytest.raises(UserError, match=r"slurm\.mem asks for 1T per node"):
        request(job(GPU_JOB, **{"slurm.mem": "1T"}), node)


@pytest.mark.parametrize(
    ("partition", "expected"),
    [
        (None, NodeLimits("gpu", 192, 1031000, ("dgx01", "dgx02", "hgx03"))),  # the default
        ("gpu", NodeLimits("gpu", 192, 1031000, ("dgx01", "dgx02", "hgx03"))),
        ("small,debug", NodeLimits("debug,small", 64, 515000, ("node01", "node01"))),
        ("nosuch", None),
    ],
)
def test_sinfo_machine_output_is_parsed(partition: str | None, expected: NodeLimits) -> None:
    assert parse_sinfo(SINFO, partition) == expected


def test_unexpected_sinfo_output_is_shown_raw() -> None:
    def runner(argv):  # type: ignore[no-untyped-def]
        return subprocess.CompletedProcess(argv, 0, "PARTITION NODES\ngpu 4\n", "")

    with pytest.raises(UserError) as caught:
        partition_limits("gpu", runner)
    assert "could not read the node sizes sinfo printed" in caught.value.message
    assert "PARTITION NODES" in caught.value.message


def test_no_slurm_means_sizes_from_the_profile() -> None:
    def runner(argv):  # type: ignore[no-untyped-def]
        return run_command(["/nonexistent/sinfo", *argv[1:]])

    assert partition_limits("gpu", runner) is None


def test_container_name_is_per_image() -> None:
    a, b = container_name("nvcr.io/x:1"), container_name("nvcr.io/x:2")
    assert a != b and a.startswith("vlaunch-") and a == container_name("nvcr.io/x:1")


def test_dry_run_says_how_defaults_were_fitted(tmp_path: Path) -> None:
    spec = write_job(tmp_path / "job.yaml", job(GPU_JOB, **{"resources.profile": "rtx3090ti"}))
    rc, out, err = cli("slurm", str(spec), "--dry-run")
    assert rc == 0, err
    assert "#SBATCH --cpus-per-task=14\n" in out and "#SBATCH --mem=57G\n" in out
    assert "#   note  --cpus-per-task=14: 16 would exceed the rtx3090ti profile's node" in err


@pytest.mark.slurm
def test_the_real_cluster_is_asked_for_its_nodes(slurm_env: Path, tmp_path: Path) -> None:
    """The local cluster's nodes: 8 CPUs, no RealMemory configured (Slurm's default: 1 MB)."""
    node = partition_limits("debug", run_command)
    assert node is not None
    assert (node.partition, node.cpus, node.nodes) == ("debug", 8, ("node1", "node2"))
    data = job(CPU_JOB, **{"slurm.cpus_per_task": None, "slurm.cpus_per_gpu": 16})
    asked = request(data, node)
    assert asked.cpus == 8  # 16 would not fit
    assert asked.mem == f"{node.memory_mb}M"
