"""The chat template of a tiny model: one ChatML-like template for every family.

Only the media placeholders differ between families, and they come from the processor: the
text it expands into image (or video) tokens, `processor.image_token`, wrapped in the
processor's `vision_start_token` / `vision_end_token` where it has them and does not write
them itself (Qwen-VL's `<|vision_start|><|image_pad|><|vision_end|>`, which the M-RoPE
position ids rely on). `overrides.py` may replace a placeholder, with its reason.

The template renders a prefix of a conversation as a prefix of the whole rendering, supports
`add_generation_prompt`, ends each answer with the end-of-turn token `<|im_end|>` and marks
answers with `{% generation %}` (for `return_assistant_tokens_mask`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.models.tiny.overrides import override
from trainer.models.tiny.tokenizer import TURN_END, TURN_START, iter_token_keys, token_key_name

if TYPE_CHECKING:
    from transformers import PretrainedConfig, ProcessorMixin


@dataclass(frozen=True)
class Placeholders:
    """What the template writes for an image or a video part (None: not supported)."""

    image: str | None
    video: str | None


def placeholders(
    model_type: str, processor: ProcessorMixin, config: PretrainedConfig
) -> Placeholders:
    """The media placeholders of `model_type`'s template, read off its processor and config.

    The placeholder is the processor's `image_token` / `video_token` (its
    `image_placeholder_token` where it has one). Where the config names
    the tokens that open and close a vision span (`vision_start_token_id`, ...,
    `image_start_token_id`, ...), which the model looks for in the sequence, and the processor
    does not write them itself, the placeholder is wrapped in them.
    """
    attrs = {k: v for k, v in vars(processor).items() if isinstance(v, str)}
    custom = override(model_type).get("template", {})
    found: dict[str, str | None] = {}
    for kind in ("image", "video"):
        if kind in custom:
            found[kind] = custom[kind].format(**attrs)
            continue
        # A processor with a separate placeholder expands that one (QianfanOCR's `<image>`
        # becomes `<|context_image|>` tokens).
        token = attrs.get(f"{kind}_placeholder_token") or attrs.get(f"{kind}_token")
        if not token or (kind == "video" and not _has_video(processor)):
            found[kind] = None
            continue
        expanded = None
        for start, end in _span_tokens(processor, config, kind):
            expanded = expanded if expanded is not None else _expanded(processor, kind, token)
            if start not in expanded:
                token = f"{start}{token}{end}"
            break
        found[kind] = token
    return Placeholders(found["image"], found["video"])


def _span_tokens(
    processor: ProcessorMixin, config: PretrainedConfig, kind: str
) -> list[tuple[str, str]]:
    """(start, end) tokens around a `kind` span, from the processor or the config's ids."""
    attrs = vars(processor)
    ids = {token_key_name(k): level[k] for k, level in _token_ids(config.to_dict())}
    tokenizer = processor.tokenizer
    out = []
    for name in ("vision", kind):
        start = attrs.get(f"{name}_start_token")
        end = attrs.get(f"{name}_end_token")
        start_id, end_id = ids.get(f"{name}_start"), ids.get(f"{name}_end")
        if not (start and end) and isinstance(start_id, int) and isinstance(end_id, int):
            start = tokenizer.convert_ids_to_tokens(start_id)
            end = tokenizer.convert_ids_to_tokens(end_id)
        if isinstance(start, str) and isinstance(end, str) and start and end:
            out.append((start, end))
    return out


def _token_ids(d: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for key, path in iter_token_keys(d):
        level = d
        for p in path:
            level = level[p]
        out.append((key, level))
    return out


def _has_video(processor: ProcessorMixin) -> bool:
    return getattr(processor, "video_processor", None) is not None


def _expanded(processor: ProcessorMixin, kind: str, token: str) -> str:
    """The text the processor turns one bare placeholder into."""
    from trainer.models.tiny.media import sample_image, video_inputs

    if kind == "video" and not _has_video(processor):
        return ""
    media = {"images": [sample_image()]} if kind == "image" else video_inputs()
    out = processor(text=[f"a{token}b"], **media)
    return str(processor.tokenizer.decode(out["input_ids"][0]))


def chat_template(media: Placeholders) -> str:
    """The template: `<|im_start|>role\\n...<|im_end|>\\n` turns, media written in place."""
    parts = ["{%- if part['type'] == 'text' -%}{{- part['text'] -}}"]
    for kind in ("image", "video"):
        text = getattr(media, kind)
        if text is not None:
            parts.append(f"{{%- elif part['type'] == '{kind}' -%}}{{{{- {json.dumps(text)} -}}}}")
    body = "".join(parts) + "{%- endif -%}"
    start, end = json.dumps(TURN_START), json.dumps(TURN_END)
    return (
        "{%- for message in messages -%}"
        f"{{{{- {start} + message['role'] + '\\n' -}}}}"
        "{%- if message['content'] is string -%}"
        "{%- set content = [{'type': 'text', 'text': message['content']}] -%}"
        "{%- else -%}{%- set content = message['content'] -%}{%- endif -%}"
        "{%- if message['role'] == 'assistant' -%}{% generation %}"
        "{%- for part in content -%}" + body + "{%- endfor -%}"
        f"{{{{- {end} -}}}}{{% endgeneration %}}"
        "{%- else -%}"
        "{%- for part in content -%}" + body + "{%- endfor -%}"
        f"{{{{- {end} -}}}}"
        "{%- endif -%}"
        "{{- '\\n' -}}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{- {start} + 'assistant\\n' -}}}}{{%- endif -%}}"
    )
