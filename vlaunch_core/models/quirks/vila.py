"""VILA's original checkpoints (`model_type: llava_llama`, folders llm/, vision_tower/,
mm_projector/) load only through VILA's own code base; NVILA has transformers-format `-hf`
checkpoints that vlaunch trains."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    refuse="a VILA checkpoint in VILA's original layout (model_type 'llava_llama', folders "
    "llm/, vision_tower/, mm_projector/), which transformers cannot load",
    refuse_hint="use the transformers-format checkpoints: "
    "Efficient-Large-Model/NVILA-Lite-8B-hf-preview or Efficient-Large-Model/NVILA-8B-hf "
    "(with model.trust_remote_code=true)",
)
