"""Tiny models load back through the same path as real ones; their byte-level tokenizer
takes any text. (Every verified architecture is exercised in test_tiny_models.py.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.models.conftest import FAMILIES
from trainer.models.loading import load_model
from vlaunch_core.spec import ModelSpec


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_folder_loads_like_a_checkpoint(
    family: str, tiny_path: Callable[[str], Path], tiny_batch: Callable[[str], dict[str, Any]]
) -> None:
    """`tiny:<type>` and the folder it names load the same model, processor and logits."""
    by_name = load_model(ModelSpec(name_or_path=f"tiny:{family}"))
    by_path = load_model(ModelSpec(name_or_path=str(tiny_path(family))))
    assert by_name.family.name == by_path.family.name == family
    assert by_path.path == tiny_path(family)
    assert type(by_name.processor) is type(by_path.processor)
    batch = tiny_batch(family)
    with torch.no_grad():
        torch.testing.assert_close(
            by_name.model.eval()(**batch).logits,
            by_path.model.eval()(**batch).logits,
            rtol=0,
            atol=0,
        )


_TOKENIZER: list[Any] = []


def _tokenizer() -> Any:
    if not _TOKENIZER:
        from transformers import AutoConfig

        from trainer.models.tiny.tokenizer import byte_level_tokenizer, derive_vocab

        vocab = derive_vocab("qwen2_vl", AutoConfig.for_model("qwen2_vl"))
        _TOKENIZER.append(byte_level_tokenizer(vocab))
    return _TOKENIZER[0]


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
    assert len(added) >= 4
    for token, token_id in added.items():
        assert tokenizer(f"a{token}b", add_special_tokens=False)["input_ids"] == [
            *tokenizer("a", add_special_tokens=False)["input_ids"],
            token_id,
            *tokenizer("b", add_special_tokens=False)["input_ids"],
        ], token
