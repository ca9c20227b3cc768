"""CLI latency runs every command and reports medians (no timing asserts)."""

from __future__ import annotations

from bench import cli_latency, report


def test_every_command_is_timed() -> None:
    result = cli_latency.run(repeats=1)
    assert [r["command"] for r in result["rows"]] == [c[0] for c in cli_latency.CASES]
    for row in result["rows"]:
        assert "error" not in row, row
        assert 0 < row["min"] <= row["median"] <= row["max"]
        assert isinstance(row["meets_target"], bool)
    page = report.cli_latency(result)
    assert page.count("| `vlaunch ") == len(cli_latency.CASES) and "median of 1 runs" in page
