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
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.models.tiny.classes import processor_class, subprocessor_defaults
from trainer.models.tiny.overrides import override

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast, ProcessorMixin

logger = logging.getLogger(__name__)

BYTE_TOKENS = 256
"""Every byte is one token; there are no merges."""

PAD, BOS, TURN_START, TURN_END = "<|pad|>", "<|bos|>", "<|im_start|>", "<|im_end|>"
BASE = (PAD, BOS, TURN_START, TURN_END)
"""The tokens every tiny tokenizer has: padding, start of text, and the chat-role markers
of the generic template (`<|im_end|>` ends a turn and is the end-of-sequence token)."""

MODEL_MAX_LENGTH = 4096

_SPECIAL_LOOKING = re.compile(r"^(<[^<>\s]+>|\[[A-Z_]+\])$")
"""Processor attributes holding strings like these are tokens (`<image>`, `<|image_pad|>`,
`[IMG]`); other strings (Aya Vision's `TILE`) are plain text the processor writes."""

_TOKEN_LIKE = re.compile(r"<[^<>\s]+>|\[[A-Z_]+\]")
_MAX_PROBES = 32


@dataclass(frozen=True)
class TinyVocab:
    """The special tokens of a tiny tokenizer: ids 0..n-1 in `specials` order, bytes after."""

    specials: tuple[str, ...]
    named: dict[str, str] = field(default_factory=dict)
    """Named special tokens the processor reads off the tokenizer (`boi_token` -> token)."""
    processor_tokens: dict[str, str] = field(default_factory=dict)
    """Token strings the processor keeps as attributes (`image_token` -> `<|image_pad|>`)."""
    repeated: dict[str, str] = field(default_factory=dict)
    """`image` / `video` -> the token the processor repeats for one (the model's token)."""

    @property
    def size(self) -> int:
        return len(self.specials) + BYTE_TOKENS

    def token_id(self, token: str) -> int:
        return self.specials.index(token)

    def token_for(self, name: str) -> str | None:
        """The token a config key stands for: `boi` (from `boi_token_index`) -> its token."""
        if name in {"bos", "eos", "pad"}:
            return {"bos": BOS, "eos": TURN_END, "pad": PAD}[name]
        if name in self.repeated:
            return self.repeated[name]
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

    class ProbeTokenizer(PreTrainedTokenizerFast):
        """A real tokenizer that records what a processor asked of it and it lacked: named
        tokens (`tokenizer.boi_token`) and tokens looked up by their text
        (`convert_tokens_to_ids("<|begin_of_video|>")`)."""

        def __getattr__(self, key: str) -> Any:
            try:
                return super().__getattr__(key)
            except AttributeError:
                if "_special_tokens_map" in self.__dict__:
                    self.__dict__.setdefault("missing", []).append(key)
                raise

        def convert_tokens_to_ids(self, tokens: Any) -> Any:
            ids = super().convert_tokens_to_ids(tokens)
            if isinstance(tokens, str) and ids is None and _SPECIAL_LOOKING.match(tokens):
                self.__dict__.setdefault("looked_up", []).append(tokens)
            return ids

    return ProbeTokenizer


def derive_vocab(
    model_type: str, config: PretrainedConfig | None = None, extra: tuple[str, ...] = ()
) -> TinyVocab:
    """The special tokens of `model_type`'s tiny tokenizer, read off its processor and config.

    The processor class is built with a byte-level tokenizer; whenever it fails on a named
    token the tokenizer lacks (`tokenizer.boi_token`), that token is added as `<|boi|>` and
    the build retried. Processor classes that default their tokens when the tokenizer has
    none (`<|image_pad|>`) keep those defaults. The config's image (video) token is the one
    the processor repeats for an image (video): Aya Vision writes `<image>` in text and
    expands it into `<|IMG_PATCH|>` tokens, which the model looks for. `extra` tokens are
    added at the end.
    """
    from transformers import AutoConfig

    config = config if config is not None else AutoConfig.for_model(model_type)
    named: dict[str, str] = dict(override(model_type).get("named_tokens", {}))
    processor_tokens: dict[str, str] = {}
    added: list[str] = []
    repeated: dict[str, str] = {}
    cls = processor_class(model_type)
    if cls is not None:
        processor, added = _probe(model_type, cls, named, ())
        processor_tokens = {
            k: v
            for k, v in vars(processor).items()
            if k.endswith("_token") and isinstance(v, str) and _SPECIAL_LOOKING.match(v)
        }
        known = (*named.values(), *processor_tokens.values(), *added)
        processor, _ = _probe(model_type, cls, named, known)  # every token known now
        repeated, written = _expansions(processor)
        added += written
    vocab = TinyVocab((), named, processor_tokens, repeated)
    wanted = [
        *named.values(),
        *processor_tokens.values(),
        *added,
        *(vocab.token_for(n) or f"<|{n}|>" for n in config_token_names(config)),
        *extra,
    ]
    return TinyVocab(tuple(dict.fromkeys([*BASE, *wanted])), named, processor_tokens, repeated)


def _probe(
    model_type: str, cls: type[ProcessorMixin], named: dict[str, str], known: tuple[str, ...]
) -> tuple[ProcessorMixin, list[str]]:
    """The processor class built around a byte-level tokenizer of `known` tokens; `named`
    grows by the named tokens it requires. Also returns the tokens it added itself."""
    probe_cls = _probe_tokenizer_class()
    for _ in range(_MAX_PROBES):
        specials = tuple(dict.fromkeys((*BASE, *known, *named.values())))
        tok = byte_level_tokenizer(TinyVocab(specials, named))
        probe = probe_cls(tokenizer_object=tok.backend_tokenizer, **_named_kwargs(tok, named))
        before = set(probe.get_added_vocab())
        try:
            processor = cls(**subprocessor_defaults(model_type, cls, probe))
        except (AttributeError, ValueError):
            # The last named token the processor asked for and did not get is the one it
            # failed on (hasattr() checks before it only chose a default).
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
        return processor, [*added, *probe.__dict__.get("looked_up", [])]
    raise RuntimeError(f"{model_type}: the processor keeps asking for tokens")  # pragma: no cover


def _expansions(processor: ProcessorMixin) -> tuple[dict[str, str], list[str]]:
    """What the processor writes for one image / video: the token it repeats (`image` ->
    `<|IMG_PATCH|>`), and every token-like piece of text it writes (Ovis2's `<IMG_START>`,
    `<IMG_ATOM>`, `<IMG_GRID>`, `<IMG_END>`), which become tokens of the vocabulary."""
    from trainer.models.tiny.media import sample_image, video_inputs

    repeated: dict[str, str] = {}
    written: list[str] = []
    for kind, media in (
        ("image", {"images": [sample_image()]}),
        ("video", video_inputs()),
    ):
        placeholder = getattr(processor, f"{kind}_token", None)
        if not isinstance(placeholder, str) or (
            kind == "video" and getattr(processor, "video_processor", None) is None
        ):
            continue
        try:
            ids = processor(text=[f"a{placeholder}b"], return_tensors="pt", **media)["input_ids"][0]
        except Exception as e:  # default-size processors may refuse; the name mapping stays
            logger.debug("%s: no expansion of %s: %s", type(processor).__name__, kind, e)
            continue
        text = processor.tokenizer.decode(ids)
        counts = Counter(_TOKEN_LIKE.findall(text))
        written += counts
        if counts and counts.most_common(1)[0][1] > 1:
            repeated[kind] = counts.most_common(1)[0][0]
    return repeated, written


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


ALWAYS_SET = frozenset({"bos_token_id", "eos_token_id", "pad_token_id"})


def iter_token_keys(
    d: dict[str, Any], path: tuple[str, ...] = (), unset: bool = False
) -> list[tuple[str, tuple[str, ...]]]:
    """(key, path of the dict holding it) for every token-id key with a value, sub-configs
    included; bos/eos/pad keys are listed even when unset (the tiny model sets them), and
    with `unset` every token-id key is."""
    out = []
    for k, v in d.items():
        if not isinstance(k, str) or k.startswith("_"):
            continue
        if isinstance(v, dict):
            out += iter_token_keys(v, (*path, k), unset)
        elif _TOKEN_KEY.match(k) and (
            isinstance(v, int | list) or (v is None and (unset or k in ALWAYS_SET))
        ):
            out.append((k, path))
    return out
