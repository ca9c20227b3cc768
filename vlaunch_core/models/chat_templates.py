"""Chat templates of the tiny models (torch-free).

Each reproduces the prompt format of its family's released checkpoints (LLaVA-1.5's Vicuna
`USER: ... ASSISTANT:`, Qwen's ChatML, Idefics3's `User:`/`Assistant:`, Llama 3's headers), so
that code written against the tiny models sees the same structure as with real ones. Message
`content` may be a string or a list of `{"type": "text" | "image" | "video", ...}` parts.
Assistant text is wrapped in `{% generation %}` so `return_assistant_tokens_mask=True` works;
the released templates of some families lack those markers (see docs/models.md).
"""

from __future__ import annotations

# `parts` normalises string content into a one-element list of text parts.
_PARTS = (
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
)
_TEXT = "parts | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ')"

#: LLaVA-1.5 / LLaVA-NeXT (Vicuna v1): `USER: <image>\nq ASSISTANT: a</s>`; media first.
#: The space after `ASSISTANT:` belongs to the answer: with one token per byte it is the first
#: token the model generates after the generation prompt, so it is trained as such.
VICUNA = (
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
)

#: Qwen2-VL / Qwen2.5-VL (ChatML with vision markers and a default system prompt).
CHATML_QWEN = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif -%}"
    "{%- for message in messages -%}" + _PARTS + "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}"
    "{{ " + _TEXT + " + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

#: Idefics3 / SmolVLM: `<|begin_of_text|>User:<image>q<end_of_utterance>\nAssistant: a...`.
IDEFICS3 = (
    "{{ bos_token }}"
    "{%- for message in messages -%}" + _PARTS + "{{ message['role'] | capitalize + ':' }}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}"
    "{{ ' ' + " + _TEXT + " + '<end_of_utterance>' }}{% endgeneration %}"
    "{%- else -%}"
    "{%- if parts[0]['type'] != 'image' -%}{{ ' ' }}{%- endif -%}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{{ '<end_of_utterance>' }}"
    "{%- endif -%}{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)

#: PaliGemma has no chat format: the prompt is the user text and the answer follows a
#: newline. The processor puts the image tokens and `<bos>` in front of the prompt itself.
PALIGEMMA = (
    "{%- for message in messages -%}" + _PARTS + "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ " + _TEXT + " + eos_token }}{% endgeneration %}"
    "{%- elif message['role'] == 'user' -%}"
    "{%- for part in parts if part['type'] == 'image' -%}{{ '<image>' }}{%- endfor -%}"
    "{{ " + _TEXT + " + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

#: Llama 3.2 Vision: header tokens, `<|image|>` where the image goes, `<|eot_id|>` per turn.
LLAMA3 = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    + _PARTS
    + "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ " + _TEXT + " + '<|eot_id|>' }}{% endgeneration %}"
    "{%- else -%}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|image|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{{ '<|eot_id|>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
)
