"""A `Sample` with its decoded media as model input: ids, labels and the processor's tensors.

Labels are -100 everywhere except the assistant answers (`ChatFormat.assistant_spans`): the
rendered text is tokenised with offsets to mark the answer tokens, then the processor (which
expands each image/video placeholder into its tokens) tokenises it for real, and each answer's
tokens are located in the expanded ids after the same position, together with a few tokens of
the header before it so that a user turn ending in the same words cannot be mistaken for it.

Samples over `max_length` follow `data.overlength`:
- `truncate_text`: keep the longest prefix of whole exchanges that fits (re-encoded with only
  the media those turns show); if not even the first exchange fits, cut its answer text at
  `max_length` provided every media token and at least one answer token is kept; else drop.
- `drop`: drop the sample. - `error`: raise a `UserError` naming the file and sample.
Media tokens are never cut. `EncodeStats` counts what the policy touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from trainer.data.chat import ChatFormat, Messages
from vlaunch_core.data.formats import Sample
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL.Image import Image

    from vlaunch_core.models.description import ModelDescription

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
#: Tensors whose dim 1 runs along the token sequence (cut by truncation, padded by collation).
SEQ_KEYS = frozenset(
    {
        "input_ids",
        "labels",
        "attention_mask",
        "token_type_ids",
        "mm_token_type_ids",
        "cross_attention_mask",
        "position_ids",
    }
)
_CONTEXT = 8  # header tokens matched together with an answer


@dataclass
class EncodeStats:
    """What the overlength policy (and single-image families) did to samples."""

    encoded: int = 0
    truncated_turns: int = 0
    truncated_text: int = 0
    dropped: int = 0
    images_left_out: int = 0

    def add(self, other: EncodeStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Encoded:
    """One encoded sample (every tensor has a leading batch dim of 1)."""

    tensors: dict[str, torch.Tensor]
    answer_ends: list[int]
    """Index after the last token of each answer (end of turn included)."""
    answer_start: int
    """Index of the first answer token."""
    media_end: int
    """Index after the last media token (0 without media)."""
    overlength: str | None = None
    """None, `truncated_turns` or `truncated_text`."""
    substituted: bool = False
    """It took the place of a sample the overlength policy dropped (training only)."""

    @property
    def length(self) -> int:
        return int(self.tensors["input_ids"].shape[1])


class SampleEncoder:
    """Turns samples into model inputs with one model's processor and chat template."""

    def __init__(
        self,
        processor: Any,
        family: ModelDescription | None,
        *,
        max_length: int,
        overlength: str = "truncate_text",
        system_prompt: str | None = None,
    ) -> None:
        self.chat = ChatFormat(processor)
        self.processor = processor
        self.tokenizer = self.chat.tokenizer
        self.family = family
        self.max_length = max_length
        self.overlength = overlength
        self.system_prompt = system_prompt
        self.max_images = None if family is None else family.quirks.max_images
        self.stats = EncodeStats()
        self._media_ids = self._media_token_ids()
        self._special_ids = set(self.tokenizer.all_special_ids) | set(
            self.tokenizer.get_added_vocab().values()
        )

    def _media_token_ids(self) -> set[int]:
        names = {
            getattr(self.processor, "image_token", None),
            getattr(self.processor, "video_token", None),
        }
        vocab = self.tokenizer.get_vocab()
        ids = {vocab[n] for n in names if isinstance(n, str) and n in vocab}
        for attr in ("image_token_id", "video_token_id"):
            value = getattr(self.processor, attr, None)
            if isinstance(value, int):
                ids.add(value)
        return ids

    # ------------------------------------------------------------------ public

    def encode(
        self, sample: Sample, images: Sequence[Image] = (), videos: Sequence[np.ndarray] = ()
    ) -> Encoded | None:
        """The model input of `sample`, or None when the overlength policy drops it."""
        full = self._encode(sample, images, videos)
        enc = (
            full
            if full.length <= self.max_length
            else self._overlength(sample, images, videos, full)
        )
        if enc is None:
            self.stats.dropped += 1
            return None
        self.stats.encoded += 1
        if self.max_images is not None and len(sample.images) > self.max_images:
            self.stats.images_left_out += len(sample.images) - self.max_images
        if enc.overlength:
            setattr(self.stats, enc.overlength, getattr(self.stats, enc.overlength) + 1)
        return enc

    def encode_prompt(
        self, sample: Sample, images: Sequence[Image] = (), videos: Sequence[np.ndarray] = ()
    ) -> tuple[dict[str, torch.Tensor], str]:
        """Inputs for generating the last answer of `sample`, and that answer (exact match)."""
        last = max(i for i, t in enumerate(sample.turns) if t.role == "assistant")
        prompt = sample.with_turns(sample.turns[:last])
        msgs = self._messages(prompt, images, videos)
        text = self.chat.render(msgs, add_generation_prompt=True)
        out = self._process(text, prompt, images, videos)
        return out, sample.turns[last].text

    # ------------------------------------------------------------------ internals

    def _messages(
        self, sample: Sample, images: Sequence[Image], videos: Sequence[np.ndarray]
    ) -> Messages:
        frames = [len(v) for v in videos[: len(sample.videos)]]
        return self.chat.messages(sample, self.system_prompt, frames, self.max_images)

    def _media_in_order(
        self, sample: Sample, images: Sequence[Image], videos: Sequence[np.ndarray]
    ) -> tuple[list[Any], list[Any]]:
        """Images (video frames included when the processor has no video part) and videos,
        in the order their parts appear."""
        img: list[Any] = []
        vid: list[Any] = []
        ni = nv = 0
        for turn in sample.turns:
            for part in turn.parts:
                if part.type == "image":
                    if self.max_images is None or ni < self.max_images:
                        img.append(images[ni])
                    ni += 1
                elif part.type == "video":
                    if self.chat.video_mode == "frames":
                        from PIL import Image as PILImage

                        img += [PILImage.fromarray(f) for f in videos[nv]]
                    else:
                        vid.append(videos[nv])
                    nv += 1
        return img, vid

    def _process(
        self, text: str, sample: Sample, images: Sequence[Image], videos: Sequence[np.ndarray]
    ) -> dict[str, torch.Tensor]:
        img, vid = self._media_in_order(sample, images, videos)
        kwargs: dict[str, Any] = {
            "text": [text],
            "return_tensors": "pt",
            "add_special_tokens": self.chat.add_special_tokens(text),
        }
        if img:
            kwargs["images"] = img
        if vid:
            # Frames come sampled already; some processors write frame timestamps from the
            # metadata they return (Muse Glimmer fails without it). It is not a tensor, so it
            # stays out of the model inputs below.
            kwargs["videos"] = vid
            kwargs["return_metadata"] = True
        out = self.processor(**kwargs)
        return {k: v for k, v in out.items() if k != "labels" and hasattr(v, "shape")}

    def _encode(
        self, sample: Sample, images: Sequence[Image], videos: Sequence[np.ndarray]
    ) -> Encoded:
        msgs = self._messages(sample, images, videos)
        text = self.chat.render(msgs)
        spans = self.chat.assistant_spans(msgs, text)
        special = self.chat.add_special_tokens(text)
        plain = self.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        plain_ids: list[int] = plain["input_ids"]
        answers = [
            [i for i, (s, e) in enumerate(plain["offset_mapping"]) if a <= s < b and e > s]
            for a, b in spans
        ]
        tensors = self._process(text, sample, images, videos)
        ids: list[int] = tensors["input_ids"][0].tolist()
        labels, ends, first = self._locate(ids, plain_ids, answers, sample)
        import torch

        tensors["labels"] = torch.tensor([labels], dtype=torch.long)
        if "token_type_ids" in tensors and self.family is not None and self.family.quirks.prefix_lm:
            # PaliGemma is a prefix-LM: the answer (suffix) must be marked to stay causal.
            tensors["token_type_ids"] = torch.zeros_like(tensors["input_ids"])
            tensors["token_type_ids"][0, first:] = 1
        media = [i for i, t in enumerate(ids) if t in self._media_ids]
        media_end = 0
        if media:
            media_end = media[-1] + 1
            while (
                media_end < len(ids)
                and ids[media_end] in self._special_ids
                and ids[media_end] not in (self.tokenizer.eos_token_id,)
            ):
                media_end += 1
        return Encoded(tensors, ends, first, media_end)

    def _locate(
        self, ids: list[int], plain: list[int], answers: list[list[int]], sample: Sample
    ) -> tuple[list[int], list[int], int]:
        """Labels over the processor's ids: each answer found after the previous one."""
        labels = [IGNORE_INDEX] * len(ids)
        ends: list[int] = []
        pos = 0
        media = self._media_ids
        first = len(ids)
        for tokens in answers:
            if not tokens:
                continue
            start = tokens[0]
            ctx = start
            while ctx > 0 and start - ctx < _CONTEXT and plain[ctx - 1] not in media:
                ctx -= 1
            pattern = plain[ctx : tokens[-1] + 1]
            at = _find(ids, pattern, max(pos, ctx))
            if at < 0:
                raise RuntimeError(
                    f"{sample.source} sample {sample.index}: an answer's tokens were not found "
                    "in the processor's output (the processor changes text, not only media "
                    "placeholders); please report this with the model name"
                )
            a0 = at + (start - ctx)
            for t in tokens:
                labels[a0 + (t - start)] = ids[a0 + (t - start)]
            pos = at + len(pattern)
            ends.append(pos)
            first = min(first, a0)
        return labels, ends, first

    def _overlength(
        self, sample: Sample, images: Sequence[Image], videos: Sequence[np.ndarray], enc: Encoded
    ) -> Encoded | None:
        where = f"{sample.source} sample {sample.index}"
        if self.overlength == "error":
            raise UserError(
                f"{where}: {enc.length} tokens > data.max_length={self.max_length}",
                hint="raise data.max_length, shorten the sample, or set data.overlength to "
                "truncate_text or drop (`vlaunch data check` lists every such sample)",
            )
        if self.overlength == "drop":
            return None
        assistants = [i for i, t in enumerate(sample.turns) if t.role == "assistant"]
        fitting = sum(1 for e in enc.answer_ends if e <= self.max_length)
        for k in range(fitting, 0, -1):  # longest prefix of whole exchanges first
            cut = sample.with_turns(sample.turns[: assistants[k - 1] + 1])
            shorter = self._encode(cut, images, videos)
            if shorter.length <= self.max_length:
                shorter.overlength = "truncated_turns"
                return shorter
        first = sample.with_turns(sample.turns[: assistants[0] + 1])
        enc = self._encode(first, images, videos)
        if enc.media_end >= self.max_length or enc.answer_start >= self.max_length:
            logger.debug("%s: media and prompt alone exceed max_length: dropped", where)
            return None
        for key, value in enc.tensors.items():
            if key in SEQ_KEYS:
                enc.tensors[key] = value[:, : self.max_length]
        enc.answer_ends = [min(e, self.max_length) for e in enc.answer_ends]
        enc.overlength = "truncated_text"
        return enc


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    """First index >= start where `needle` occurs in `haystack`, or -1."""
    n = len(needle)
    first = needle[0]
    i = start
    end = len(haystack) - n
    while i <= end:
        try:
            i = haystack.index(first, i, end + 1)
        except ValueError:
            return -1
        if haystack[i : i + n] == needle:
            return i
        i += 1
    return -1
