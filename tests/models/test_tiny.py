"""Tiny models: built in code, saved and loaded back through the same path as real ones."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import AutoConfig, AutoModelForImageTextToText

from tests.models.conftest import FAMILIES
from trainer.models.loading import load_model
from trainer.models.processors import load_processor
from trainer.models.tiny import build_processor, build_tiny, build_tokenizer
from vlaunch_core.models.tiny_specs import get_tiny_spec, tiny_config_dict
from vlaunch_core.spec import ModelSpec

MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which shape?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "a circle"}]},
]


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_model_loads_back_with_the_same_logits(
    family: str, tmp_path: Path, tiny_batch: Callable[[str], dict[str, Any]]
) -> None:
    torch.manual_seed(1)
    model = AutoModelForImageTextToText.from_config(
        AutoConfig.for_model(**tiny_config_dict(family))
    ).eval()
    model.save_pretrained(tmp_path)
    spec = get_tiny_spec(family)
    build_processor(spec, build_tokenizer(spec)).save_pretrained(tmp_path)

    loaded = load_model(ModelSpec(name_or_path=str(tmp_path)))
    assert loaded.family.name == family
    assert loaded.path == tmp_path
    assert type(loaded.processor).__name__ == spec.processor["class"]
    batch = tiny_batch(family)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model.eval()(**batch).logits, model(**batch).logits, rtol=0, atol=0
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_marks_the_answer_and_tokens_fit_the_model(
    family: str, tiny_path: Callable[[str], Path]
) -> None:
    processor = load_processor(tiny_path(family))
    tokenizer = processor.tokenizer
    out = tokenizer.apply_chat_template(
        MESSAGES,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        chat_template=processor.chat_template,
    )
    answer = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(answer).strip().startswith("a circle")
    assert tokenizer.decode(answer).endswith(tokenizer.eos_token)
    prompt = processor.apply_chat_template(MESSAGES[:1], add_generation_prompt=True)
    full = processor.apply_chat_template(MESSAGES)
    assert full.startswith(prompt)  # generation continues exactly where training answers start
    config = tiny_config_dict(family)
    vocab = config.get("text_config", config)["vocab_size"]
    extra = 8 if family == "mllama" else 0  # Mllama's embeddings have vocab_size + 8 rows
    assert max(tokenizer(full)["input_ids"]) < vocab + extra


def test_llava_processor_expands_the_image_to_the_models_tokens(
    tiny_batch: Callable[[str], dict[str, Any]],
) -> None:
    config = tiny_config_dict("llava")
    ids = tiny_batch("llava")["input_ids"][0]
    assert int((ids == config["image_token_index"]).sum()) == config["image_seq_length"] == 16


@settings(max_examples=60, deadline=None)
@given(text=st.text())
def test_byte_level_tokenizer_round_trips_any_text(text: str) -> None:
    tokenizer = _tokenizer()
    # Added tokens written out in text are control tokens, as in the real tokenizers
    # (checked below); any other text is bytes.
    assume(not any(token in text for token in tokenizer.get_added_vocab()))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte, no unknowns


def test_added_tokens_in_text_are_single_control_tokens() -> None:
    tokenizer = _tokenizer()
    added = tokenizer.get_added_vocab()
    assert "<|endoftext|>" in added
    for token, token_id in added.items():
        assert tokenizer(f"a{token}b", add_special_tokens=False)["input_ids"] == [
            *tokenizer("a", add_special_tokens=False)["input_ids"],
            token_id,
            *tokenizer("b", add_special_tokens=False)["input_ids"],
        ], token


_TOKENIZER: list[Any] = []


def _tokenizer() -> Any:
    if not _TOKENIZER:
        _TOKENIZER.append(build_tokenizer(get_tiny_spec("qwen2_vl")))
    return _TOKENIZER[0]


def test_builds_are_deterministic(tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        folder = build_tiny("idefics3", tmp_path / name)
        digests.append(
            {
                f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                for f in sorted(folder.iterdir())
                if f.name in ("model.safetensors", "tokenizer.json", "config.json")
            }
        )
    assert len(digests[0]) == 3
    assert digests[0] == digests[1]
