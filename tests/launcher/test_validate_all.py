"""`vlaunch validate` reports every problem of a spec in one round, cheap data facts
included, and `--json` makes errors JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from launcher.cli import main

SAMPLE = {
    "image": "a.png",
    "conversations": [{"from": "human", "value": "<image>hi"}, {"from": "gpt", "value": "x"}],
}


def _write(folder: Path, spec: dict[str, object], samples: int = 6) -> Path:
    (folder / "six.json").write_text(json.dumps([SAMPLE] * samples))
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


EIGHT_MISTAKES = {
    "name": "eight",
    "model": {"name_or_path": "tiny:lava", "attn_implementaton": "sdpa"},  # 1, 2
    "data": {
        "mixture": "six+sevn",  # 3: unknown dataset
        "datasets": {"six": {"data_path": "six.json"}},
        "max_lenght": 512,  # 4
    },
    "tuning": {"preset": "lora_lm"},  # 5
    "train": {
        "global_batch_size": 16,
        "micro_batch_size": 3,  # 6: does not divide 16 / 2
        "lr": "fast",  # 7
        "precision": "fp8",  # 8
    },
    "resources": {"profile": "cpu", "gpus_per_node": 2},
}


def test_eight_independent_mistakes_in_one_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _write(tmp_path, EIGHT_MISTAKES)
    code, out, _ = _cli(capsys, "validate", str(job), "--json")
    assert code == 2
    report = json.loads(out)
    wheres = sorted(p["where"] for p in report["problems"])
    assert wheres == sorted(
        [
            "model.name_or_path",
            "model.attn_implementaton",
            "data.mixture",
            "data.max_lenght",
            "tuning.preset",
            "train.global_batch_size",
            "train.lr",
            "train.precision",
        ]
    )
    text = json.dumps(report)
    assert "sevn" in text and "Did you mean 'llava'" in text and "does not divide" in text


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_mixture_smaller_than_one_global_batch_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    job = _write(
        tmp_path,
        {
            "name": "six",
            "model": {"name_or_path": "tiny:llava"},
            "data": {"mixture": "six", "datasets": {"six": {"data_path": "six.json"}}},
            "train": {"global_batch_size": 16, "micro_batch_size": 2},
            "resources": {"profile": "cpu", "gpus_per_node": 2},
        },
    )
    code, _, err = _cli(capsys, command, str(job))
    assert code == 2
    assert "the training mixture has 6 samples, fewer than one global batch (16)" in err
    code, _, err = _cli(capsys, command, str(job), "data.mixture=six*3")  # 18 >= 16
    assert code == 0, err


def test_an_invalid_key_is_reported_once_not_again_by_the_rules_it_feeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {
        "name": "once",
        "model": {"name_or_path": "tiny:llava"},
        "data": {"mixture": "six", "datasets": {"six": {"data_path": "six.json"}}},
        "train": {"global_batch_size": 16, "micro_batch_size": "three"},
        "resources": {"profile": "cpu", "gpus_per_node": 2},
    }
    code, out, _ = _cli(capsys, "validate", str(_write(tmp_path, spec, 32)), "--json")
    assert code == 2
    assert [p["where"] for p in json.loads(out)["problems"]] == ["train.micro_batch_size"]


def test_a_missing_required_key_does_not_hide_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {"model": {"name_or_path": "tiny:llava"}, "data": {"mixture": "nope"}}
    code, out, _ = _cli(capsys, "validate", str(_write(tmp_path, spec)), "--json")
    assert code == 2
    wheres = {p["where"] for p in json.loads(out)["problems"]}
    assert wheres == {"name", "data.mixture"}


def test_a_hub_id_only_on_the_network_is_left_to_the_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    spec = {
        "name": "hub",
        "model": {"name_or_path": "someorg/some-vlm"},
        "data": {"mixture": "six", "datasets": {"six": {"data_path": "six.json"}}},
        "train": {"global_batch_size": 4, "micro_batch_size": 2},
        "resources": {"profile": "cpu", "gpus_per_node": 2},
    }
    code, _, err = _cli(capsys, "validate", str(_write(tmp_path, spec)))
    assert code == 0, err
    assert os.environ["HF_HOME"].endswith("empty-hf-home")


def test_errors_of_other_json_commands_are_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, "plan", str(tmp_path / "missing.yaml"), "--json")
    assert code == 2 and not err
    assert json.loads(out)["error"].endswith("missing.yaml: no such file")
