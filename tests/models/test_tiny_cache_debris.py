"""A half-written tiny-model folder (no config.json) is replaced, not fatal."""

from __future__ import annotations

from pathlib import Path

from trainer.models.loading import _tiny_version, tiny_model_path


def test_debris_without_config_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / _tiny_version() / "llava"
    target.mkdir(parents=True)
    (target / "tokenizer.json").write_text("{}")  # what a killed writer once left behind
    path = tiny_model_path("llava", tmp_path)
    assert path == target
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()
    assert [p.name for p in path.parent.iterdir()] == ["llava"]  # no stale folders left
