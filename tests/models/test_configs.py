"""Model configs from every kind of name, without torch and without the network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlaunch_core.errors import UserError
from vlaunch_core.models.configs import model_config_dict


def test_tiny_and_random_and_known_hub_ids() -> None:
    assert model_config_dict("tiny:llava")["model_type"] == "llava"
    assert model_config_dict("random:qwen2-vl-2b")["hidden_size"] == 1536
    assert model_config_dict("llava-hf/llava-1.5-7b-hf") == model_config_dict("random:llava-1.5-7b")
    config = model_config_dict("random:qwen2-vl-2b")
    config["hidden_size"] = 1
    assert model_config_dict("random:qwen2-vl-2b")["hidden_size"] == 1536  # a copy


def test_local_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "paligemma"}))
    assert model_config_dict(str(tmp_path)) == {"model_type": "paligemma"}
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read the model config"):
        model_config_dict(str(tmp_path))


def test_hub_cache_is_read_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real Hugging Face cache layout, as huggingface_hub writes it.
    repo = tmp_path / "models--acme--tiny-vlm"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "mllama", "x": 1}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    assert model_config_dict("acme/tiny-vlm") == {"model_type": "mllama", "x": 1}


@pytest.mark.parametrize(
    ("name", "message", "hint"),
    [
        ("random:qwen2-vl-3b", "unknown architecture 'qwen2-vl-3b'", "random:<name>"),
        ("nobody/nothing-vlm", "not in the Hugging Face", "huggingface-cli download"),
        ("./missing/model", "does not exist", "existing folder"),
    ],
)
def test_unknown_names_are_user_errors_with_a_fix(name: str, message: str, hint: str) -> None:
    with pytest.raises(UserError) as err:
        model_config_dict(name)
    assert message in err.value.message
    assert hint in (err.value.hint or "")
