"""`vlaunch models`: every architecture of the installed transformers, and one model's parts,
layer classes and LoRA targets read off the model itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from launcher.cli import main
from tests.models.conftest import FAMILIES
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


def test_every_architecture_of_transformers_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    assert main(["models", "--json"]) == 0
    rows = {r["model_type"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
    assert {t for t, r in rows.items() if r["verified"]} >= set(FAMILIES)
    assert rows["qwen2_vl"]["video"] and not rows["paligemma"]["video"]


def test_presets_json_without_torch() -> None:
    out = _vlaunch("models", "--presets", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["preset"]: r for r in json.loads(out.stdout)}
    assert set(rows) == set(PRESETS)
    assert rows["lora_vt_qlora_llm"]["vila_script"] == "srun_lora_vt_llm_grouped_nf4"
    assert rows["lora_llm"]["vision_tower"] == "frozen"
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []


def test_details_of_an_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "mllama", "--json"]) == 0
    details = json.loads(capsys.readouterr().out)
    assert details["class"] == "MllamaForConditionalGeneration"
    assert "MllamaCrossAttentionDecoderLayer" in details["layer_classes"]
    assert re.fullmatch(details["lora_targets"], "model.language_model.layers.3.cross_attn.q_proj")
    assert not re.fullmatch(
        details["lora_targets"], "model.vision_model.transformer.layers.0.mlp.fc1"
    )
    assert set(details["parameters"]) >= {"vision_tower", "projector", "language_model"}


def test_details_of_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "tiny:qwen2_vl", "--json"]) == 0
    details = json.loads(capsys.readouterr().out)
    assert details["projector"] == ["model.visual.merger"]
    assert details["vision_tower"] == ["model.visual"]
    assert re.fullmatch(details["vision_lora_targets"], "model.visual.blocks.1.attn.qkv")
    assert main(["models", "tiny:qwen2_vl"]) == 0
    assert "Qwen2VLDecoderLayer" in capsys.readouterr().out


def test_unknown_name_exits_2_with_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "qwen2vl"]) == 2
    assert "Did you mean 'qwen2_vl'" in capsys.readouterr().err


def test_one_media_statement_per_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    """`vlaunch models`, `vlaunch models NAME` and docs/model-media.md say the same, from the
    model description's source: a video processor, or frames as images, or one image."""
    assert main(["models", "--json"]) == 0
    rows = {r["model_type"]: r for r in json.loads(capsys.readouterr().out)}
    expected = {
        "llava": ("one", "no"),
        "paligemma": ("one", "no"),
        "mllama": ("one", "no"),
        "llava_next": ("several", "as frames"),  # Granite Vision: videos as frames
        "idefics3": ("several", "as frames"),
        "llava_next_video": ("several", "yes"),
        "qwen2_vl": ("several", "yes"),
        "qwen2_5_vl": ("several", "yes"),
    }
    for model_type, (images, videos) in expected.items():
        assert (rows[model_type]["images"], rows[model_type]["videos"]) == (images, videos)
    assert main(["models", "llava", "--json"]) == 0
    details = json.loads(capsys.readouterr().out)
    assert (details["video"], details["multi_image"]) == (False, False)
    assert details["media"].startswith("one image per sample, no videos")


def test_golden_model_media_doc_is_current() -> None:
    import os

    from tests.conftest import REPO
    from trainer.models.catalog import media_doc as render

    path = REPO / "docs" / "model-media.md"
    if os.environ.get("VLAUNCH_REGEN_GOLDEN"):
        path.write_text(render())
    assert path.read_text() == render(), (
        "docs/model-media.md is stale: run `make golden` (or python -m trainer.models.catalog)"
    )
