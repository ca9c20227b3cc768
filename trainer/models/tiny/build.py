"""Write a tiny model folder that loads like a real checkpoint."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.models.tiny.processor import tiny_processor
from trainer.models.tiny.shrink import tiny_config
from trainer.models.tiny.template import chat_template, placeholders
from trainer.models.tiny.tokenizer import TinyVocab, byte_level_tokenizer, derive_vocab

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SEED = 0
"""Weights are a function of the architecture only (seeded init)."""
GATE_VALUE = 0.5
MATRIX_STD = 0.02
_GATE = re.compile(r"(^|[._])gate$|_gate$")
"""Scalar gates (Mllama's `cross_attn_attn_gate`, `gated_positional_embedding.gate`)."""


def build_tiny(model_type: str, out_dir: Path) -> Path:
    """Write the tiny model of `model_type` to `out_dir` (created) and return it.

    The folder holds `config.json`, the weights, the tokenizer, the processor (image and
    video processors included) and the chat template, as `save_pretrained` writes them for
    a real checkpoint: `AutoModelForImageTextToText.from_pretrained(out_dir)` and
    `AutoProcessor.from_pretrained(out_dir)` load it.
    """
    from transformers import AutoConfig, AutoTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra: tuple[str, ...] = ()
    for _ in range(2):
        vocab = derive_vocab(model_type, AutoConfig.for_model(model_type), extra)
        _write(model_type, vocab, out_dir)
        # The tokenizer class transformers maps to the model type may add its own default
        # tokens on load (GPT2Tokenizer's unk `<|endoftext|>`): those join the vocabulary.
        loaded = AutoTokenizer.from_pretrained(out_dir)
        extra = tuple(t for t in loaded.get_added_vocab() if t not in vocab.specials)
        if not extra:
            break
    else:  # pragma: no cover - a tokenizer class adding new tokens at every load
        raise RuntimeError(f"{model_type}: the tokenizer grows at every load: {extra}")
    logger.debug("built tiny %s in %s", model_type, out_dir)
    return out_dir


def _write(model_type: str, vocab: TinyVocab, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    config = tiny_config(model_type, vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        opened = open_gates(model)
    if opened:
        logger.debug("%s: zero-initialised parameters opened: %s", model_type, opened)
    tokenizer = byte_level_tokenizer(vocab)
    processor = tiny_processor(model_type, config, tokenizer, model)
    template = chat_template(placeholders(model_type, processor, config))
    processor.chat_template = template
    tokenizer.chat_template = template
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def open_gates(model: torch.nn.Module) -> list[str]:
    """Give zero-initialised gates and projections a value; return their names.

    A tanh gate at 0 (Mllama's cross-attention and tile-position gates) or a projection
    matrix of zeros (Gemma 3's `mm_input_projection_weight`) multiplies its input by 0:
    everything before it gets no gradient, so a tiny random model would never train those
    parts. Released checkpoints have learnt non-zero values. Gates become 0.5, matrices
    random (std 0.02); zero biases and norm weights are left alone.
    """
    import torch

    opened = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.any():
                continue
            if _GATE.search(name.removesuffix(".weight")) and p.numel() <= 4:
                p.fill_(GATE_VALUE)
            elif p.ndim >= 2:
                p.normal_(0.0, MATRIX_STD)
            else:
                continue
            opened.append(name)
    return opened
