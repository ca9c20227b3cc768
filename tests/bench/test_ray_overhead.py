"""Ray overhead: the same job under torchrun and `vlaunch local` (a real local Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import ray_overhead, report


@pytest.mark.ray
@pytest.mark.slow
def test_both_hosts_train_with_the_same_threads(bench_root: Path) -> None:
    result = ray_overhead.run(
        repeats=1,
        steps=4,
        warmup=1,
        hidden=64,
        layers=2,  # a stack of layers (LoRA targets the layers of a repeated stack)
        global_batch_size=4,
        micro_batch_size=2,
        root=bench_root,
    )
    for mode in ("torchrun", "ray"):
        m = result["modes"][mode]
        assert m["median_step_s"] > 0
        assert 0 < m["first_step_s"] < m["wall_s"]
        (run,) = result["runs"][mode]
        assert run["steps_timed"] == 3 and run["load_average_before"] >= 0
    ratio = result["modes"]["ray"]["median_step_s"] / result["modes"]["torchrun"]["median_step_s"]
    assert result["step_time_ratio"] == pytest.approx(ratio, abs=1e-4)
    assert isinstance(result["meets_target"], bool)
    # every rank of both hosts reported its threads (the run fails when the hosts differ)
    ranks = result["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["torch_threads"] == ray_overhead.THREADS_PER_RANK
        assert r["env"]["OMP_NUM_THREADS"] == str(ray_overhead.THREADS_PER_RANK)
    page = report.ray_overhead(result)
    assert f"**{result['step_time_ratio']:.3f}**" in page and "1 intra-op" in page


def test_probe_reads_what_the_ranks_wrote(tmp_path: Path) -> None:
    """The probe's files, as a rank writes them (the probe itself runs in the test above)."""
    import json
    import subprocess
    import sys

    from bench.common import bench_env

    # a real process joins a one-rank gloo group with the probe on its PYTHONPATH, then waits
    # (at most a minute) for the probe's file before it exits
    code = (
        "import sys, time, pathlib, torch.distributed as d\n"
        "folder = pathlib.Path(sys.argv[1])\n"
        "d.init_process_group('gloo', init_method=f'file://{folder}/store', rank=0, "
        "world_size=1)\n"
        "deadline = time.monotonic() + 60\n"
        "while not list(folder.glob('rank-*.json')) and time.monotonic() < deadline:\n"
        "    time.sleep(0.1)\n"
    )
    env = bench_env(threads=1, **ray_overhead.probe_env(tmp_path))
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=True, timeout=120)
    (rank,) = ray_overhead.read_probe(tmp_path)
    assert rank["rank"] == 0 and rank["torch_threads"] == 1
    assert rank["env"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert "pid" not in rank
    assert json.loads(next(tmp_path.glob("rank-0-*.json")).read_text())["pid"] > 0
