"""Run in a fresh interpreter by the round-trip test: use a run's exports with transformers
(and PEFT) only, the way their READMEs say. Any import of vlaunch's packages (`launcher`,
`trainer`) raises, and the script checks at the end that none was imported.

    python load_without_vlaunch.py JOBS.json

Each job is one run: {"exports": {NAME: DIR}, "cases": {CASE: {"inputs": FILE, "messages":
[...], "image": PATH | null, "video": PATH | null, "add_special_tokens": BOOL}},
"max_new_tokens": N, "stop_ids": [...], "pad_id": N, "result": FILE}. Exports are loaded
with `AutoModelForImageTextToText.from_pretrained(DIR)` (an adapter folder: transformers loads
the base model its adapter_config.json names and applies the adapter with PEFT), plus
`non_lora_trainables.safetensors` where there is one; the export `peft` (an adapter folder
too) goes through `PeftModel.from_pretrained` instead. Every export's processor is
`AutoProcessor.from_pretrained(DIR)`.

For each export and case, "result" (safetensors) gets `EXPORT.CASE.logits` (the model on the
inputs vlaunch encoded, saved in the case's "inputs"), `EXPORT.CASE.enc.KEY` (the export's
processor on the case: its chat template renders the messages, then text and media are
encoded; the image is read with Pillow, the video decoded whole with PyAV and passed as
`videos=`) and `EXPORT.CASE.generated` (greedy tokens from that encoding). The last line
printed is a JSON report: per result file and export, the classes loaded and the rendered
prompts.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from pathlib import Path
from typing import Any

BLOCKED = ("launcher", "trainer")
NON_LORA = "non_lora_trainables.safetensors"


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".", maxsplit=1)[0] in BLOCKED:
            raise ImportError(f"{name} must not be needed to load an export")
        return None


def load_model(kind: str, folder: str) -> Any:
    """An export as its README loads it."""
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    if kind == "peft":
        from peft import PeftModel

        config = json.loads((Path(folder) / "adapter_config.json").read_text())
        base = AutoModelForImageTextToText.from_pretrained(config["base_model_name_or_path"])
        model = PeftModel.from_pretrained(base, folder)

        def name(key: str) -> str:
            return key
    else:
        model = AutoModelForImageTextToText.from_pretrained(folder)

        def name(key: str) -> str:  # saved from a PeftModel; this is the bare model
            return key.removeprefix("base_model.model.")

    extra = Path(folder) / NON_LORA
    if extra.is_file():
        result = model.load_state_dict(
            {name(k): v for k, v in load_file(str(extra)).items()}, strict=False
        )
        assert not result.unexpected_keys, result.unexpected_keys
    return model.eval()


def video_frames(path: str) -> Any:
    """Every frame of the video, (T, H, W, 3) uint8."""
    import av
    import numpy as np

    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def main() -> None:
    sys.meta_path.insert(0, _Blocker())
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from transformers import AutoProcessor

    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    report: dict[str, Any] = {}
    for job in jobs:
        out: dict[str, torch.Tensor] = {}
        info: dict[str, Any] = {}
        for kind, folder in job["exports"].items():
            model = load_model(kind, folder)
            processor = AutoProcessor.from_pretrained(folder)
            info[kind] = {
                "model": type(model).__name__,
                "peft": bool(getattr(model, "_hf_peft_config_loaded", False)),
                "processor": type(processor).__name__,
                "video_processor": type(getattr(processor, "video_processor", None)).__name__,
                "text": {},
            }
            for case, spec in job["cases"].items():
                with torch.no_grad():
                    out[f"{kind}.{case}.logits"] = model(**load_file(spec["inputs"])).logits
                text = processor.apply_chat_template(
                    spec["messages"], add_generation_prompt=True, tokenize=False
                )
                info[kind]["text"][case] = text
                media: dict[str, Any] = {}
                if spec["image"]:
                    media["images"] = [Image.open(spec["image"]).convert("RGB")]
                if spec["video"]:
                    media["videos"] = [video_frames(spec["video"])]
                enc = processor(
                    text=[text],
                    return_tensors="pt",
                    add_special_tokens=spec["add_special_tokens"],
                    **media,
                )
                for key, value in enc.items():
                    out[f"{kind}.{case}.enc.{key}"] = value
                with torch.no_grad():
                    out[f"{kind}.{case}.generated"] = model.generate(
                        **enc,
                        do_sample=False,
                        max_new_tokens=job["max_new_tokens"],
                        eos_token_id=job["stop_ids"],
                        pad_token_id=job["pad_id"],
                    )
        save_file({k: v.contiguous() for k, v in out.items()}, job["result"])
        report[job["result"]] = info
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print(json.dumps(report))


if __name__ == "__main__":
    main()
