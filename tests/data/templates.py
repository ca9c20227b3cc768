"""Chat formats of released checkpoints, as test data for label masking.

Every tiny model shares one ChatML template (`trainer/models/tiny/template.py`), but the
encoder must find the answers of whatever template a checkpoint ships. Each `ChatStyle` below
reproduces the prompt format of a released checkpoint (text around turns and media, where the
answer starts, its end-of-turn token, who writes BOS) together with the special tokens its
tokenizer has; `styled_processor` puts it on a tiny model of the matching family, as a
checkpoint folder would hold it. Only LLaVA's template marks answers with
`{% generation %}` (the tiny models' old Vicuna template did); the released templates of
Qwen2-VL, Idefics3 and Llama 3.2 Vision have no such markers, and PaliGemma ships no template
at all, so those are written without them: label masking must not need them.

Message `content` may be a string or a list of `{"type": "text" | "image" | "video"}` parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# `parts` normalises string content into a one-element list of text parts.
_PARTS = (
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
)
_TEXT = "parts | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ')"


@dataclass(frozen=True)
class ChatStyle:
    """A released checkpoint's chat format and the special tokens its tokenizer has."""

    name: str
    checkpoint: str
    """The released checkpoint whose format this reproduces."""
    template: str
    bos: str
    eos: str
    specials: tuple[str, ...] = ()
    """Further special tokens the template writes (role headers, end of turn)."""
    add_bos: bool = False
    """The tokenizer itself prepends `bos` (Llama 2 and Llama 3 tokenizers do)."""


VICUNA = ChatStyle(
    name="vicuna",
    checkpoint="llava-hf/llava-1.5-7b-hf (Vicuna v1: `USER: <image>\\nq ASSISTANT: a</s>`)",
    # Media first. The space after `ASSISTANT:` belongs to the answer: with one token per
    # byte it is the first token the model generates after the generation prompt.
    template=(
        "{%- for message in messages -%}"
        + _PARTS
        + "{%- if message['role'] == 'system' -%}{{ "
        + _TEXT
        + " + ' ' }}"
        "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT:' }}"
        "{% generation %}{{ ' ' + " + _TEXT + " + eos_token }}{% endgeneration %}{{ ' ' }}"
        "{%- else -%}{{ message['role'].upper() + ': ' }}"
        "{%- for part in parts -%}"
        "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}"
        "{%- elif part['type'] == 'video' -%}{{ '<video>\\n' }}{%- endif -%}"
        "{%- endfor -%}{{ " + _TEXT + " + ' ' }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
    ),
    bos="<s>",
    eos="</s>",
    add_bos=True,
)

QWEN = ChatStyle(
    name="qwen",
    checkpoint="Qwen/Qwen2-VL-7B-Instruct (ChatML, vision markers, a default system prompt)",
    template=(
        "{%- if messages[0]['role'] != 'system' -%}"
        "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif -%}"
        "{%- for message in messages -%}"
        + _PARTS
        + "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{%- if message['role'] == 'assistant' -%}"
        "{{ " + _TEXT + " + '<|im_end|>\\n' }}"
        "{%- else -%}"
        "{%- for part in parts -%}"
        "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
        "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{{ '<|im_end|>\\n' }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    ),
    bos="<|endoftext|>",
    eos="<|im_end|>",
    specials=("<|im_start|>", "<|vision_start|>", "<|vision_end|>"),
)

IDEFICS3 = ChatStyle(
    name="idefics3",
    checkpoint="HuggingFaceM4/Idefics3-8B-Llama3 "
    "(`<|begin_of_text|>User:<image>q<end_of_utterance>\\nAssistant: a<end_of_utterance>`)",
    template=(
        "{{ bos_token }}"
        "{%- for message in messages -%}" + _PARTS + "{{ message['role'] | capitalize + ':' }}"
        "{%- if message['role'] == 'assistant' -%}"
        "{{ ' ' + " + _TEXT + " + '<end_of_utterance>' }}"
        "{%- else -%}"
        "{%- if parts[0]['type'] != 'image' -%}{{ ' ' }}{%- endif -%}"
        "{%- for part in parts -%}"
        "{%- if part['type'] == 'image' -%}{{ '<image>' }}"
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{{ '<end_of_utterance>' }}"
        "{%- endif -%}{{ '\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
    ),
    bos="<|begin_of_text|>",
    eos="<end_of_utterance>",
)

PALIGEMMA = ChatStyle(
    name="paligemma",
    checkpoint="google/paligemma-3b-pt-224 (no chat format: prompt, newline, answer, <eos>; "
    "the processor puts the image tokens and <bos> in front)",
    template=(
        "{%- for message in messages -%}" + _PARTS + "{%- if message['role'] == 'assistant' -%}"
        "{{ " + _TEXT + " + eos_token }}"
        "{%- elif message['role'] == 'user' -%}"
        "{%- for part in parts if part['type'] == 'image' -%}{{ '<image>' }}{%- endfor -%}"
        "{{ " + _TEXT + " + '\\n' }}"
        "{%- endif -%}"
        "{%- endfor -%}"
    ),
    bos="<bos>",
    eos="<eos>",
)

LLAMA3 = ChatStyle(
    name="llama3",
    checkpoint="meta-llama/Llama-3.2-11B-Vision-Instruct (header tokens, <|image|> in place, "
    "<|eot_id|> per turn; without the dated default system message)",
    template=(
        "{{ bos_token }}"
        "{%- for message in messages -%}"
        + _PARTS
        + "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        "{%- if message['role'] == 'assistant' -%}"
        "{{ " + _TEXT + " + '<|eot_id|>' }}"
        "{%- else -%}"
        "{%- for part in parts -%}"
        "{%- if part['type'] == 'image' -%}{{ '<|image|>' }}"
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{{ '<|eot_id|>' }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
    ),
    bos="<|begin_of_text|>",
    eos="<|eot_id|>",
    specials=("<|start_header_id|>", "<|end_header_id|>"),
    # The Llama 3 tokenizer prepends <|begin_of_text|> and the template writes it too: the
    # encoder must not add it twice.
    add_bos=True,
)

STYLES = {s.name: s for s in (VICUNA, QWEN, IDEFICS3, PALIGEMMA, LLAMA3)}


def styled_processor(tiny_folder: Path, style: ChatStyle, out_dir: Path) -> Any:
    """The processor of the tiny model in `tiny_folder` with `style`'s tokens and template,
    saved to `out_dir` and loaded back as a checkpoint's would be (processors read the
    tokenizer's special tokens when they are built)."""
    from trainer.models.processors import load_processor

    processor = load_processor(tiny_folder)
    tokenizer = processor.tokenizer
    tokens: dict[str, Any] = {"bos_token": style.bos, "eos_token": style.eos}
    if style.specials:
        tokens["extra_special_tokens"] = list(style.specials)
    tokenizer.add_special_tokens(tokens, replace_extra_special_tokens=False)
    tokenizer.add_bos_token = style.add_bos
    tokenizer.chat_template = style.template
    processor.chat_template = style.template
    processor.save_pretrained(out_dir)
    return load_processor(out_dir)
