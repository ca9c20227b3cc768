"""Tiny VLMs built in code: the fixtures of the test suite and the demo model.

`build_tiny(family, out_dir)` writes a model folder (random weights via `save_pretrained`, a
byte-level tokenizer, an image processor, the chat template) that loads back through the same
`from_pretrained` path as a downloaded checkpoint. Nothing is downloaded. Processors are the
family's own classes, video processors included where the family has one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlaunch_core.models.tiny_specs import TINY_SPECS, TinySpec, get_tiny_spec, tiny_config_dict

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase, ProcessorMixin

logger = logging.getLogger(__name__)

__all__ = ["TINY_SPECS", "build_processor", "build_tiny", "build_tokenizer", "tiny_config_dict"]

TINY_SEED = 0
"""Weights of a tiny model are a function of the family only (seeded init)."""


def build_tokenizer(spec: TinySpec) -> PreTrainedTokenizerBase:
    """A byte-level tokenizer: the family's special tokens, then one token per byte."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(spec.specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in spec.specials])
    if spec.add_bos:
        bos_id = spec.token_id(spec.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A $B", special_tokens=[(spec.bos, bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec.bos,
        eos_token=spec.eos,
        pad_token=spec.pad,
        extra_special_tokens=dict(spec.extra_special_tokens) or None,
        model_max_length=4096,
        padding_side="right",
        chat_template=spec.chat_template,
    )


def build_processor(spec: TinySpec, tokenizer: PreTrainedTokenizerBase) -> ProcessorMixin:
    """The family's processor: its image processor and, where it has one, video processor."""
    import transformers

    kwargs: dict[str, Any] = dict(spec.processor)
    cls = getattr(transformers, kwargs.pop("class"))
    image_cls_name, image_kwargs = kwargs.pop("image_processor")
    image_processor = getattr(transformers, image_cls_name)(**image_kwargs)
    if "video_processor" in kwargs:
        video_cls_name, video_kwargs = kwargs.pop("video_processor")
        kwargs["video_processor"] = getattr(transformers, video_cls_name)(**video_kwargs)
    if spec.family == "paligemma":
        # PaliGemmaProcessor reads this attribute; the released processors carry it too.
        image_processor.image_seq_length = image_kwargs["image_seq_length"]
    return cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=spec.chat_template,
        **kwargs,
    )


def _set_init_values(model: torch.nn.Module, values: dict[str, float]) -> None:
    import re

    import torch

    with torch.no_grad():
        for pattern, value in values.items():
            hits = [p for n, p in model.named_parameters() if re.fullmatch(pattern, n)]
            assert hits, f"tiny init pattern {pattern!r} matches no parameter"
            for p in hits:
                p.fill_(value)


def build_tiny(family: str, out_dir: Path) -> Path:
    """Write the tiny model of `family` to `out_dir` (created) and return it.

    The folder holds `config.json`, the weights, the tokenizer, the processor and the chat
    template, exactly as `save_pretrained` writes them for a real checkpoint.
    """
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    spec = get_tiny_spec(family)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_dict = tiny_config_dict(family)
    config = AutoConfig.for_model(**config_dict)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    _set_init_values(model, spec.init_values)
    model.save_pretrained(out_dir)
    tokenizer = build_tokenizer(spec)
    processor = build_processor(spec, tokenizer)
    processor.save_pretrained(out_dir)
    logger.debug("built tiny %s model in %s", family, out_dir)
    return out_dir
