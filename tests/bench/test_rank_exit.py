"""The rank-exit reliability check runs both modes for real and counts what it saw."""

from __future__ import annotations

from bench import rank_exit


def test_one_launch_of_each_mode_is_counted() -> None:
    result = rank_exit.run(runs=1)
    assert result["command"] == "python -m bench.rank_exit --runs 1"
    for mode in rank_exit.MODES:
        assert result[mode]["runs"] == 1
        assert result[mode]["failed"] in (0, 1)
    # the plain exit aborts in about one launch in eight; exit_rank must not
    assert result["exit_rank"] == {"runs": 1, "failed": 0, "rank_exit_codes": {}}
