"""A tiny NVILA-shaped remote-code model config (a test fixture of vlaunch, not NVILA's code):
the `-hf` checkpoints' layout, parts `llm`, `vision_tower`, `mm_projector`."""

from transformers import LlamaConfig, PretrainedConfig, SiglipVisionConfig


class NVILAConfig(PretrainedConfig):
    model_type = "nvila"
    sub_configs = {"text_config": LlamaConfig, "vision_config": SiglipVisionConfig}

    def __init__(self, text_config=None, vision_config=None, image_token_id=0, **kwargs):
        if isinstance(text_config, dict):
            text_config = LlamaConfig(**text_config)
        if isinstance(vision_config, dict):
            vision_config = SiglipVisionConfig(**vision_config)
        self.text_config = text_config or LlamaConfig()
        self.vision_config = vision_config or SiglipVisionConfig()
        self.image_token_id = image_token_id
        super().__init__(**kwargs)
