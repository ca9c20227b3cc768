"""A tiny remote-code VLM folder shaped like NVILA's `-hf` checkpoints (parts `llm`,
`vision_tower`, `mm_projector`; `auto_map` to its own `configuration_nvila.py` and
`modeling_nvila.py`, loaded with `AutoModel` + `trust_remote_code`). Written by the tests;
nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FILES = Path(__file__).parent / "remote_code_files"
SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% else %}ASSISTANT: {% endif %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% if m['role'] == 'assistant' %}</s>{% else %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=TEMPLATE,
    )


def write_nvila_like(folder: Path) -> Path:
    """Write the model folder (config, code, weights, tokenizer, processor) and return it."""
    import torch
    from transformers import AutoConfig, AutoModel, LlavaProcessor, SiglipImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("configuration_nvila.py", "modeling_nvila.py"):
        shutil.copyfile(FILES / name, folder / name)
    tokenizer = _tokenizer()
    config = {
        "model_type": "nvila",
        "architectures": ["NVILAForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_nvila.NVILAConfig",
            "AutoModel": "modeling_nvila.NVILAForCausalLM",
        },
        "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
        "tie_word_embeddings": False,
        "text_config": {
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 1024,
            "initializer_range": 0.1,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 3,
            "tie_word_embeddings": False,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    cfg = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModel.from_config(cfg, trust_remote_code=True, dtype=torch.float32)
    model.save_pretrained(folder)
    processor = LlavaProcessor(
        image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        image_token="<image>",
        chat_template=TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder
