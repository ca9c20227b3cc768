"""Hostile datasets for `vlaunch data check` and `data synth`, in process: a failed check is
exit 1 with the problem named (and `--json` stays one JSON document), a refused command exit 2
with one message; no traceback; nothing written where it should not be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.conftest import spec_data
from tests.hostile.helpers import assert_refused, cli, tree, write_spec

pytestmark = pytest.mark.timeout(120, func_only=True)


def _check_json(*argv: str) -> dict:
    result = cli("data", "check", *argv, "--json")
    assert "Traceback" not in result.text, result.text[-3000:]
    data: dict = json.loads(result.out)
    assert result.code == (0 if data["summary"]["errors"] == 0 else 1), result
    return data


def _kinds(data: dict) -> set[str]:
    return {p["kind"] for p in data["problems"] if p["severity"] == "error"}


@pytest.mark.parametrize(
    "content", ["", "[]", "\n\n", "[\n]\n"], ids=["empty", "array", "blank", "array2"]
)
def test_a_dataset_without_samples_fails_the_check(tmp_path: Path, content: str) -> None:
    """`data check` said OK for an empty file."""
    path = tmp_path / "data.json"
    path.write_text(content)
    data = _check_json(str(path))
    assert "empty_dataset" in _kinds(data), data
    text = cli("data", "check", str(path))
    assert text.code == 1 and "FAILED" in text.out and "Traceback" not in text.text


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_a_problem_of_its_sample(tmp_path: Path, depth: int) -> None:
    """A RecursionError traceback before, and no JSON under --json."""
    for name, body in (
        ("array.json", "[" + '{"conversations": ' + "[" * depth + "]" * depth + "}]"),
        ("lines.jsonl", '{"conversations": ' + "[" * depth + "]" * depth + "}\n"),
    ):
        path = tmp_path / name
        path.write_text(body)
        data = _check_json(str(path))
        assert any("nested too deeply" in p["message"] for p in data["problems"]), data


def test_every_sample_over_max_length_fails_the_check(job: Path) -> None:
    """`data check` said OK while training stopped at its first step (every sample dropped)."""
    data = spec_data(job)
    data["data"]["max_length"] = 16
    data["data"]["overlength"] = "drop"
    write_spec(job, data)
    report = _check_json(str(job))
    assert "nothing_to_train" in _kinds(report), report["summary"]
    assert report["summary"]["would_drop"] == report["summary"]["samples"]


def test_data_synth_into_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me")
    before = tree(tmp_path)
    assert_refused(cli("data", "synth", str(target)), "is a file")
    assert_refused(cli("data", "synth", str(target / "below")), str(target))
    assert tree(tmp_path) == before


def test_data_synth_never_writes_among_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "train.json").write_text('["mine"]')
    before = tree(tmp_path)
    assert_refused(cli("data", "synth", str(tmp_path), "--train", "1"), "not empty")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("flag", ["--train", "--eval", "--video-train"])
def test_data_synth_sizes_are_bounded(tmp_path: Path, flag: str) -> None:
    assert_refused(cli("data", "synth", str(tmp_path / "out"), flag, "1000000000"), flag)
    assert not (tmp_path / "out").exists()
