"""PaliGemma: a prefix-LM with one image before the prompt."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    max_images=1,
    prefix_lm=True,
    packing="its prefix-LM attention (token_type_ids) is built per row",
    notes=(
        "no chat format: prompt, newline, answer; the processor prepends the image tokens",
        "the prompt attends bidirectionally (prefix-LM): token_type_ids mark the answer",
    ),
)
