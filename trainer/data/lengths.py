"""Token lengths of samples as the model's processor would make them, without pixels.

Text is rendered with the chat template and tokenised in batches; each image or video adds the
number of tokens the processor expands its placeholder into, measured once per distinct size
on a blank image of that size (so the count follows the family's processor exactly: fixed for
LLaVA, size-dependent for Qwen2-VL or Idefics3, zero for Mllama's cross-attention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainer.data.chat import ChatFormat
from vlaunch_core.data.check import LengthCount, LengthQuery


class TokenCounter:
    """Implements `vlaunch_core.data.check.LengthCounter` with a real processor."""

    def __init__(
        self,
        processor: Any,
        name: str,
        system_prompt: str | None = None,
        max_images: int | None = None,
    ) -> None:
        self.chat = ChatFormat(processor)
        self.name = name
        self.system_prompt = system_prompt
        self.max_images = max_images
        self._image_delta: dict[tuple[int, int], int] = {}
        self._video_delta: dict[tuple[int, int, int], int] = {}

    def count(self, queries: Sequence[LengthQuery], max_length: int | None) -> list[LengthCount]:
        texts = [self._render(q) for q in queries]
        totals = [
            n + self._media_tokens(q)
            for n, q in zip(self._text_tokens(texts), queries, strict=True)
        ]
        out: list[LengthCount] = []
        for q, total in zip(queries, totals, strict=True):
            shortest = None
            if max_length is not None and total > max_length:
                shortest = self._shortest(q)
            out.append(LengthCount(total, shortest))
        return out

    def _messages(self, q: LengthQuery) -> list[dict[str, Any]]:
        return self.chat.messages(
            q.sample, self.system_prompt, [v[0] for v in q.videos], self.max_images
        )

    def _render(self, q: LengthQuery) -> str:
        return self.chat.render_cached(self._messages(q))

    def _text_tokens(self, texts: list[str]) -> list[int]:
        out: list[int] = [0] * len(texts)
        for special in (True, False):
            idx = [i for i, t in enumerate(texts) if self.chat.add_special_tokens(t) == special]
            if idx:
                lengths = self._encode_lengths([texts[i] for i in idx], special)
                for i, n in zip(idx, lengths, strict=True):
                    out[i] = n
        return out

    def _encode_lengths(self, texts: list[str], special: bool) -> list[int]:
        tok = self.chat.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)  # fast tokenizers: skip the wrapper
        fast = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)
        if fast is not None:
            return [len(e.ids) for e in fast(texts, add_special_tokens=special)]
        return [len(ids) for ids in tok(texts, add_special_tokens=special)["input_ids"]]

    def _media_tokens(self, q: LengthQuery) -> int:
        return sum(self._part_tokens(q, kind, k) for kind, k in _media_parts(q, None))

    def _shortest(self, q: LengthQuery) -> int:
        """Tokens up to and including the first answer token of the first exchange."""
        msgs = self._messages(q)
        first = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        prompt = self.chat.render(msgs[:first], add_generation_prompt=True)
        answer = next(i for i, t in enumerate(q.sample.turns) if t.role == "assistant")
        before = sum(len(t.parts) for t in q.sample.turns[:answer])
        media = sum(self._part_tokens(q, kind, k) for kind, k in _media_parts(q, before))
        return self._text_tokens([prompt])[0] + media + 1

    def _part_tokens(self, q: LengthQuery, kind: str, k: int) -> int:
        if kind == "image":
            if self.max_images is not None and k >= self.max_images:
                return 0
            return self._image(*q.image_sizes[k])
        frames, w, h = q.videos[k]
        if self.chat.video_mode == "frames":
            return self._image(w, h) * frames
        return self._video(frames, w, h)

    def _delta(self, kind: str, media: Any) -> int:
        """Tokens one medium adds beyond its placeholder in the text."""
        msgs = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": "x"}]}]
        text = self.chat.render(msgs)
        special = self.chat.add_special_tokens(text)
        plain = len(self.chat.tokenizer(text, add_special_tokens=special)["input_ids"])
        key = "images" if kind == "image" else "videos"
        out = self.chat.processor(text=[text], **{key: [media]}, add_special_tokens=special)
        return len(out["input_ids"][0]) - plain

    def _image(self, w: int, h: int) -> int:
        if (w, h) not in self._image_delta:
            from PIL import Image

            self._image_delta[(w, h)] = self._delta("image", Image.new("RGB", (w, h)))
        return self._image_delta[(w, h)]

    def _video(self, frames: int, w: int, h: int) -> int:
        if (frames, w, h) not in self._video_delta:
            import numpy as np

            blank = np.zeros((frames, h, w, 3), dtype=np.uint8)
            self._video_delta[(frames, w, h)] = self._delta("video", blank)
        return self._video_delta[(frames, w, h)]


def _media_parts(q: LengthQuery, parts_limit: int | None) -> list[tuple[str, int]]:
    """(kind, index among that kind) of the media parts, in order, within the first parts."""
    out: list[tuple[str, int]] = []
    seen = {"image": 0, "video": 0}
    n = 0
    for turn in q.sample.turns:
        for part in turn.parts:
            if parts_limit is not None and n >= parts_limit:
                return out
            n += 1
            if part.type in seen:
                out.append((part.type, seen[part.type]))
                seen[part.type] += 1
    return out
