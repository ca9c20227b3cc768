"""`vlaunch models`: families and presets, without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from launcher.cli import main
from vlaunch_core.models.families import FAMILIES
from vlaunch_core.models.presets import PRESETS


def _vlaunch(*args: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys, json; from launcher.cli import main; rc = main(sys.argv[1:]); "
        "print(json.dumps([m for m in ('torch', 'transformers', 'peft') "
        "if m in sys.modules]), file=sys.stderr); raise SystemExit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )


def test_families_json_without_torch() -> None:
    out = _vlaunch("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["family"] for r in rows] == list(FAMILIES)
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []


def test_presets_json_maps_vila_scripts() -> None:
    out = _vlaunch("models", "--presets", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["preset"]: r for r in json.loads(out.stdout)}
    assert set(rows) == set(PRESETS)
    assert rows["lora_vt_qlora_llm"]["vila_script"] == "srun_lora_vt_llm_grouped_nf4"
    assert rows["lora_llm"]["vision_tower"] == "frozen"


def test_tables_and_details(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    assert "qwen2_5_vl" in capsys.readouterr().out
    assert main(["models", "--presets"]) == 0
    assert "srun_ln_vt" in capsys.readouterr().out
    assert main(["models", "mllama", "--json"]) == 0
    details = json.loads(capsys.readouterr().out)
    assert details["transformers_class"] == "MllamaForConditionalGeneration"
    assert details["default_lora_targets"] == FAMILIES["mllama"].default_lora_targets


def test_unknown_family_exits_2_with_a_suggestion() -> None:
    out = _vlaunch("models", "qwen2vl")
    assert out.returncode == 2
    assert "Did you mean 'qwen2_vl'" in out.stderr
