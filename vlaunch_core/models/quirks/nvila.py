"""NVILA's transformers-format checkpoints (`-hf`): remote code (`model.trust_remote_code:
true`) with parts `llm`, `vision_tower`, `mm_projector`, loaded through `AutoModel`. VILA's
LoRA recipe puts adapters on every Linear layer of the chosen parts (not only inside the
decoder layers), `lm_head` excepted; the projector is trained in full (every preset does)."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    lora_all_linears=True,
    notes=(
        "remote code: set model.trust_remote_code=true (the -hf checkpoints ship their own "
        "modeling code)",
        "LoRA on every Linear of a part, lm_head excepted (VILA's recipe)",
    ),
)
