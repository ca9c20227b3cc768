"""A sample as chat messages, rendered with the model's chat template.

`ChatFormat` wraps a processor (or tokenizer): it turns a `Sample` into the message list that
transformers chat templates take, renders it, and finds the character span of every assistant
answer. An answer's span starts where the template's generation prompt ends (so a leading space
the model must produce is learnt) and ends after the answer text and the special tokens right
after it (the end-of-turn token is learnt; the separator before the next turn is not). The
spans come from rendering prefixes of the conversation, so any template that renders a prefix
of a conversation as a prefix of its text works, with or without `{% generation %}` markers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from vlaunch_core.data.formats import Sample
from vlaunch_core.errors import UserError

Messages = list[dict[str, Any]]
VideoMode = Literal["video", "frames"]
_VERIFY_EVERY = 64  # a cached skeleton is re-checked against a real rendering this often


def _marker(k: int) -> str:
    return f"\ue000{k}\ue001"  # private-use characters: no template or text contains them


def _compile(template: str) -> Any:
    try:  # transformers' own compiled-template cache: 2x faster than apply_chat_template
        from transformers.utils.chat_template_utils import _compile_jinja_template

        return _compile_jinja_template(template)
    except ImportError:  # pragma: no cover - older/newer transformers without it
        return None


class ChatFormat:
    """The chat template, tokenizer and media conventions of one processor."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        template = getattr(processor, "chat_template", None) or getattr(
            self.tokenizer, "chat_template", None
        )
        if not isinstance(template, str) or not template:
            raise UserError(
                "the model's processor has no chat template",
                hint="use a chat/instruct checkpoint, or add a chat_template to its "
                "processor_config.json / tokenizer_config.json",
            )
        self.template = template
        self._compiled = _compile(template)
        self._kwargs = {
            k: v for k, v in self.tokenizer.special_tokens_map.items() if isinstance(v, str)
        }
        self.bos = self.tokenizer.bos_token
        has_video = getattr(processor, "video_processor", None) is not None
        self.video_mode: VideoMode = "video" if has_video else "frames"
        specials = {
            *self.tokenizer.all_special_tokens,
            *(str(t) for t in self.tokenizer.get_added_vocab()),
        }
        self._specials = sorted((s for s in specials if s), key=len, reverse=True)
        self._skeletons: dict[Any, list[str] | None] = {}
        self._uses: dict[Any, int] = {}

    # ------------------------------------------------------------------ messages

    def messages(
        self,
        sample: Sample,
        system_prompt: str | None = None,
        frames_per_video: Sequence[int] = (),
        max_images: int | None = None,
    ) -> Messages:
        """The sample as transformers chat messages.

        Videos become `{"type": "video"}`, or, when the processor has no video processor,
        one `{"type": "image"}` per sampled frame. Image parts past `max_images` are left out
        (families that take one image per sample).
        """
        out: Messages = []
        system = sample.system_prompt or system_prompt
        if system and (not sample.turns or sample.turns[0].role != "system"):
            out.append({"role": "system", "content": [{"type": "text", "text": system}]})
        images = videos = 0
        for turn in sample.turns:
            content: list[dict[str, Any]] = []
            for part in turn.parts:
                if part.type == "text":
                    content.append({"type": "text", "text": part.text})
                elif part.type == "image":
                    if max_images is None or images < max_images:
                        content.append({"type": "image"})
                    images += 1
                elif self.video_mode == "video":
                    content.append({"type": "video"})
                else:
                    n = frames_per_video[videos] if videos < len(frames_per_video) else 1
                    content += [{"type": "image"}] * n
                    videos += 1
                    continue
                if part.type == "video":
                    videos += 1
            out.append({"role": turn.role, "content": content})
        return out

    # ------------------------------------------------------------------ rendering

    def render(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        if self._compiled is not None:
            text: str = self._compiled.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                tools=None,
                documents=None,
                **self._kwargs,
            )
            return text
        rendered: str = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return rendered

    def render_cached(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        """`render`, memoised per conversation shape (for counting many samples fast).

        The template is rendered once per shape (roles and part types) with markers in place
        of the texts; later samples of that shape substitute their texts. A shape whose
        skeleton does not reproduce the real rendering (a template that rewrites text) is
        always rendered for real; cached shapes are re-verified every few uses.
        """
        key = (
            add_generation_prompt,
            tuple((m["role"], tuple(p["type"] for p in m["content"])) for m in messages),
        )
        texts = [p["text"] for m in messages for p in m["content"] if p["type"] == "text"]
        uses = self._uses[key] = self._uses.get(key, 0) + 1
        pieces = self._skeletons.get(key, [])
        if pieces is None:
            return self.render(messages, add_generation_prompt)
        if not pieces:
            pieces = self._skeleton(messages, add_generation_prompt)
        if pieces is not None and (uses == 1 or uses % _VERIFY_EVERY == 0):
            real = self.render(messages, add_generation_prompt)
            if _join(pieces, texts) != real:
                pieces = None
            self._skeletons[key] = pieces
            return real
        self._skeletons[key] = pieces
        return (
            _join(pieces, texts)
            if pieces is not None
            else self.render(messages, add_generation_prompt)
        )

    def _skeleton(self, messages: Messages, add_generation_prompt: bool) -> list[str] | None:
        k = 0
        marked: Messages = []
        for m in messages:
            content = []
            for p in m["content"]:
                if p["type"] == "text":
                    content.append({"type": "text", "text": _marker(k)})
                    k += 1
                else:
                    content.append(p)
            marked.append({**m, "content": content})
        text = self.render(marked, add_generation_prompt)
        pieces = []
        for i in range(k):
            before, sep, text = text.partition(_marker(i))
            if not sep or _marker(i) in text:
                return None
            pieces.append(before)
        pieces.append(text)
        return pieces

    def add_special_tokens(self, text: str) -> bool:
        """Let the tokenizer add BOS only when the template did not write it already."""
        return not (self.bos and text.startswith(self.bos))

    def assistant_spans(self, messages: Messages, text: str) -> list[tuple[int, int]]:
        """Character spans of the assistant answers in `text` (the full rendering)."""
        spans: list[tuple[int, int]] = []
        for m, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            prompt = self.render(messages[:m], add_generation_prompt=True)
            upto = self.render(messages[: m + 1])
            if not (upto.startswith(prompt) and text.startswith(upto)):
                raise UserError(
                    "the chat template does not render a conversation's prefix as a prefix of "
                    "its text, so the assistant answers cannot be located for the labels",
                    hint="use a chat template without history-dependent rewriting (see "
                    "docs/data.md, 'Labels')",
                )
            answer = " ".join(p["text"] for p in msg["content"] if p["type"] == "text").strip()
            start = len(prompt)
            at = upto.rfind(answer, start) if answer else -1
            end = at + len(answer) if at >= 0 else len(upto.rstrip())
            spans.append((start, self._after_specials(upto, end)))
        return spans

    def _after_specials(self, text: str, end: int) -> int:
        """Extend `end` over the special tokens (end of turn, EOS) that follow it."""
        while True:
            rest = text[end:]
            stripped = rest.lstrip(" ")
            for tok in self._specials:
                if stripped.startswith(tok):
                    end += len(rest) - len(stripped) + len(tok)
                    break
            else:
                return end


def _join(pieces: list[str], texts: list[str]) -> str:
    out = [pieces[0]]
    for text, piece in zip(texts, pieces[1:], strict=True):
        out += [text, piece]
    return "".join(out)
