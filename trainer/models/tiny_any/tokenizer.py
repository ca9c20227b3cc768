"""The tiny tokenizer: byte-level, with the special tokens of the family derived from it.

Special tokens first, then one token per byte (GPT-2's byte alphabet, no merges), so any text
tokenises and decodes back exactly. Which special tokens a family needs is read off its own
processor class: the named tokens it requires of the tokenizer (`tokenizer.boi_token`, ...),
the token strings it keeps as attributes (`processor.image_token`, ...), the tokens it adds
itself when built (PaliGemma's `<loc0000>`...), and the config's `*_token_id` keys.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.models.tiny_any.classes import processor_class, subprocessor_defaults
from trainer.models.tiny_any.overrides import override

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

BYTE_TOKENS = 256
"""Every byte is one token; there are no merges."""

PAD, BOS, TURN_START, TURN_END = "<|pad|>", "<|bos|>", "<|im_start|>", "<|im_end|>"
"""The tokens every tiny tokenizer has: padding, start of text, and the chat-role markers
of the generic template (`<|im_end|>` ends a turn and is the end-of-sequence token)."""

MODEL_MAX_LENGTH = 4096

_SPECIAL_LOOKING = re.compile(r"^(<[^<>\s]+>|\[[A-Z_]+\])$")
"""Processor attributes holding strings like these are tokens (`<image>`, `<|image_pad|>`,
`[IMG]`); other strings (Aya Vision's `TILE`) are plain text the processor writes."""

_MAX_PROBES = 32


@dataclass(frozen=True)
class TinyVocab:
    """The special tokens of a tiny tokenizer: ids 0..n-1 in `specials` order, bytes after."""

    specials: tuple[str, ...]
    named: dict[str, str] = field(default_factory=dict)
    """Named special tokens the processor reads off the tokenizer (`boi_token` -> token)."""
    processor_tokens: dict[str, str] = field(default_factory=dict)
    """Token strings the processor keeps as attributes (`image_token` -> `<|image_pad|>`)."""

    @property
    def size(self) -> int:
        return len(self.specials) + BYTE_TOKENS

    def token_id(self, token: str) -> int:
        return self.specials.index(token)

    def token_for(self, name: str) -> str | None:
        """The token a config key stands for: `boi` (from `boi_token_index`) -> its token."""
        if name in {"bos", "eos", "pad"}:
            return {"bos": BOS, "eos": TURN_END, "pad": PAD}[name]
        for table in (self.named, self.processor_tokens):
            if f"{name}_token" in table:
                return table[f"{name}_token"]
        return None


def byte_level_tokenizer(
    vocab: TinyVocab, chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    """A fast tokenizer over `vocab`: its special tokens, then one token per byte."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ids = {tok: i for i, tok in enumerate(vocab.specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        ids[ch] = len(ids)
    tok = Tokenizer(models.BPE(vocab=ids, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in vocab.specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=TURN_END,
        pad_token=PAD,
        extra_special_tokens=dict(vocab.named) or None,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
        chat_template=chat_template,
    )


def _probe_tokenizer_class() -> type:
    from transformers import PreTrainedTokenizerFast

    class ProbeTokenizer(PreTrainedTokenizerFast):  # type: ignore[misc]
        """A real tokenizer that records the attributes a processor asked for and lacked."""

        def __getattr__(self, key: str) -> Any:
            try:
                return super().__getattr__(key)
            except AttributeError:
                if "_special_tokens_map" in self.__dict__:
                    self.__dict__.setdefault("missing", []).append(key)
                raise

    return ProbeTokenizer


def derive_vocab(model_type: str, config: PretrainedConfig | None = None) -> TinyVocab:
    """The special tokens of `model_type`'s tiny tokenizer, read off its processor and config.

    The processor class is built with a byte-level tokenizer; whenever it fails on a named
    token the tokenizer lacks (`tokenizer.boi_token`), that token is added as `<|boi|>` and
    the build retried. Processor classes that default their tokens when the tokenizer has
    none (`<|image_pad|>`) keep those defaults.
    """
    from transformers import AutoConfig

    base = (PAD, BOS, TURN_START, TURN_END)
    named: dict[str, str] = dict(override(model_type).get("named_tokens", {}))
    processor_tokens: dict[str, str] = {}
    added: list[str] = []
    cls = processor_class(model_type)
    if cls is not None:
        probe_cls = _probe_tokenizer_class()
        for _ in range(_MAX_PROBES):
            specials = (*base, *dict.fromkeys(named.values()))
            tok = byte_level_tokenizer(TinyVocab(specials, named))
            probe = probe_cls(tokenizer_object=tok.backend_tokenizer, **_named_kwargs(tok, named))
            before = set(probe.get_added_vocab())
            try:
                processor = cls(**subprocessor_defaults(model_type, cls, probe))
            except (AttributeError, ValueError):
                # The last named token the processor asked for and did not get is the one
                # it failed on (hasattr() checks before it only chose a default).
                missing = [
                    m.removesuffix("_ids").removesuffix("_id")
                    for m in probe.__dict__.get("missing", [])
                    if _is_token_name(m)
                ]
                if not missing or missing[-1] in named:
                    raise
                named[missing[-1]] = f"<|{missing[-1].removesuffix('_token')}|>"
                continue
            added = [t for t in probe.get_added_vocab() if t not in before]
            processor_tokens = {
                k: v
                for k, v in vars(processor).items()
                if k.endswith("_token") and isinstance(v, str) and _SPECIAL_LOOKING.match(v)
            }
            break
        else:  # pragma: no cover - a processor asking for ever more tokens
            raise RuntimeError(f"{model_type}: the processor keeps asking for tokens")
    config = config if config is not None else AutoConfig.for_model(model_type)
    from_config = [f"<|{name}|>" for name in config_token_names(config)]
    vocab = TinyVocab((), named, processor_tokens)
    wanted = [
        *named.values(),
        *processor_tokens.values(),
        *added,
        *(
            vocab.token_for(n) or t
            for n, t in zip(config_token_names(config), from_config, strict=True)
        ),
    ]
    specials = tuple(dict.fromkeys([*base, *wanted]))
    return TinyVocab(specials, named, processor_tokens)


def _named_kwargs(tok: PreTrainedTokenizerFast, named: dict[str, str]) -> dict[str, Any]:
    return {
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "pad_token": tok.pad_token,
        "extra_special_tokens": dict(named) or None,
        "model_max_length": MODEL_MAX_LENGTH,
    }


def _is_token_name(attr: str) -> bool:
    return attr.removesuffix("_ids").removesuffix("_id").endswith("_token")


def config_token_names(config: PretrainedConfig) -> list[str]:
    """The token names a config refers to by id: `image_token_index` -> `image`, in order."""
    names: dict[str, None] = {}
    for key, _ in iter_token_keys(config.to_dict()):
        names[token_key_name(key)] = None
    return list(names)


_TOKEN_KEY = re.compile(r"^(.+?)_token_(id|ids|index)$|^(bos|eos|pad|decoder_start)_token_id$")


def token_key_name(key: str) -> str:
    m = _TOKEN_KEY.match(key)
    assert m, key
    return m.group(1) or m.group(3)


def iter_token_keys(
    d: dict[str, Any], path: tuple[str, ...] = ()
) -> list[tuple[str, tuple[str, ...]]]:
    """(key, path of the dict holding it) for every token-id key with a value, sub-configs
    included; bos/eos/pad keys are listed even when unset (the tiny model sets them)."""
    out = []
    for k, v in d.items():
        if not isinstance(k, str) or k.startswith("_"):
            continue
        if isinstance(v, dict):
            out += iter_token_keys(v, (*path, k))
        elif _TOKEN_KEY.match(k) and (
            isinstance(v, int | list) or k in {"bos_token_id", "eos_token_id", "pad_token_id"}
        ):
            out.append((k, path))
    return out
