"""Run in a fresh interpreter by the round-trip test: load exports with transformers and PEFT
only. Any import of vlaunch's packages (`launcher`, `trainer`) raises, and the script checks
at the end that none was imported.

    python load_without_vlaunch.py JOBS.json

Each job: {"merged": DIR, "adapter": DIR | null, "inputs": FILE, "result": FILE,
"image": PATH, "text": STR, "add_special_tokens": BOOL, "max_new_tokens": N,
"stop_ids": [...], "pad_id": N}. Writes to "result" (safetensors): the merged model's logits
and greedy tokens on the saved inputs, the adapter's logits (base + PEFT adapter), and,
when `AutoProcessor` loads, the processor's input_ids / pixel_values for the image and text.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from typing import Any

BLOCKED = ("launcher", "trainer")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".", maxsplit=1)[0] in BLOCKED:
            raise ImportError(f"{name} must not be needed to load an export")
        return None


def main() -> None:
    sys.meta_path.insert(0, _Blocker())
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from transformers import (
        AutoImageProcessor,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    report: dict[str, Any] = {}
    for job in jobs:
        inputs = load_file(job["inputs"])
        out: dict[str, torch.Tensor] = {}
        model = AutoModelForImageTextToText.from_pretrained(job["merged"]).eval()
        with torch.no_grad():
            out["logits"] = model(**inputs).logits
            out["generated"] = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=job["max_new_tokens"],
                eos_token_id=job["stop_ids"],
                pad_token_id=job["pad_id"],
            )
        tokenizer = AutoTokenizer.from_pretrained(job["merged"])
        assert tokenizer.chat_template, "the export lost its chat template"
        AutoImageProcessor.from_pretrained(job["merged"])
        info: dict[str, Any] = {"model_class": type(model).__name__}
        try:
            processor = AutoProcessor.from_pretrained(job["merged"])
        except (OSError, ValueError, AttributeError) as e:
            info["processor"] = f"{type(e).__name__}: {e}"[:300]
        else:
            image = Image.open(job["image"]).convert("RGB")
            enc = processor(
                text=[job["text"]],
                images=[image],
                return_tensors="pt",
                add_special_tokens=job["add_special_tokens"],
            )
            out["processor_input_ids"] = enc["input_ids"]
            out["processor_pixel_values"] = enc["pixel_values"]
            info["processor"] = type(processor).__name__
        if job.get("adapter"):
            from peft import PeftModel

            with open(f"{job['adapter']}/adapter_config.json") as f:
                config = json.load(f)
            base = AutoModelForImageTextToText.from_pretrained(config["base_model_name_or_path"])
            peft_model = PeftModel.from_pretrained(base, job["adapter"]).eval()
            extra = f"{job['adapter']}/non_lora_trainables.safetensors"
            try:
                result = peft_model.load_state_dict(load_file(extra), strict=False)
                assert not result.unexpected_keys, result.unexpected_keys
                info["non_lora"] = True
            except FileNotFoundError:
                info["non_lora"] = False
            with torch.no_grad():
                out["adapter_logits"] = peft_model(**inputs).logits
        save_file({k: v.contiguous() for k, v in out.items()}, job["result"])
        report[job["merged"]] = info
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print(json.dumps(report))


if __name__ == "__main__":
    main()
