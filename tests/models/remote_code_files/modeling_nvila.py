"""A tiny NVILA-shaped remote-code model (a test fixture of vlaunch, not NVILA's code): a SigLIP
vision tower, an MLP projector and a Llama language model; image tokens in the text are
replaced by the projected patch features, LLaVA-style."""

from torch import nn
from transformers import GenerationMixin, LlamaForCausalLM, PreTrainedModel, SiglipVisionModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_nvila import NVILAConfig


class NVILAForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = NVILAConfig
    base_model_prefix = ""
    _no_split_modules = ["LlamaDecoderLayer", "SiglipEncoderLayer"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True

    def __init__(self, config):
        super().__init__(config)
        self.vision_tower = SiglipVisionModel(config.vision_config)
        width = config.vision_config.hidden_size
        hidden = config.text_config.hidden_size
        self.mm_projector = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.llm = LlamaForCausalLM(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.llm.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.llm.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.llm.get_output_embeddings()

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        **kwargs,
    ):
        if inputs_embeds is None:
            inputs_embeds = self.llm.get_input_embeddings()(input_ids)
            if pixel_values is not None:
                feats = self.vision_tower(pixel_values.to(self.dtype)).last_hidden_state
                feats = self.mm_projector(feats).reshape(-1, inputs_embeds.shape[-1])
                mask = (input_ids == self.config.image_token_id).unsqueeze(-1)
                inputs_embeds = inputs_embeds.masked_scatter(mask, feats.to(inputs_embeds.dtype))
        out = self.llm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            **kwargs,
        )
        return CausalLMOutputWithPast(
            loss=out.loss, logits=out.logits, past_key_values=out.past_key_values
        )
