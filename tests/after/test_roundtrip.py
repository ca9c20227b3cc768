"""Train, export merged and adapter-only, load both in a fresh interpreter WITHOUT vlaunch.

Three families, each with non-LoRA trainables the export must carry:
- llava_next, `lora_llm`: LoRA on the LM, the projector trained in full (PEFT
  modules_to_save) and LLaVA-NeXT's bare `image_newline` (non_lora_trainables.safetensors);
- qwen2_vl, `ln_vt_lora_llm`: LoRA on the LM, the vision tower's norms and the merger;
- idefics3, `lora_vt_llm`: LoRA on the vision tower and the LM, the connector in full.

Tolerance (fp32 on CPU): logits of the merged folder loaded by transformers alone vs base +
adapter as vlaunch loads it: max abs difference <= 2e-5 (merging W + s*B@A reorders the
arithmetic); measured 2.1e-6 to 2.4e-6. The adapter-only folder loaded by PEFT alone: <= 1e-5
(measured 0). Greedy text is the same from the run directory and from the merged folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.after.helpers import cli, train_here

FAMILIES = {
    "llava_next": "lora_llm",
    "qwen2_vl": "ln_vt_lora_llm",
    "idefics3": "lora_vt_llm",
}
MAX_NEW = 6
LOGITS_ATOL = 2e-5
ADAPTER_ATOL = 1e-5
QUESTION = "What colour is the shape? Answer with one word."


@pytest.fixture(scope="module")
def roundtrips(tmp_path_factory: pytest.TempPathFactory, shapes: Path) -> dict[str, Any]:
    """Per family: reference logits / text (vlaunch), and what the fresh process computed."""
    import torch
    from safetensors.torch import load_file, save_file

    from trainer.infer import Predictor, single_prompt
    from trainer.models.loading import load_model
    from trainer.trained import load_trained, resolve

    folder = tmp_path_factory.mktemp("roundtrip")
    image = str(next(iter(sorted((shapes / "images").glob("eval_*.png")))))
    jobs: list[dict[str, Any]] = []
    refs: dict[str, Any] = {}
    for family, preset in FAMILIES.items():
        run = train_here(
            folder,
            shapes,
            family,
            model={"name_or_path": f"tiny:{family}"},
            tuning={"preset": preset, "lora": {"dropout": 0.0}},
            train={"lr": 1e-2},
        )
        merged, adapter = folder / f"{family}-merged", folder / f"{family}-adapter"
        for flag, out in (("--merge", merged), ("--adapter-only", adapter)):
            code, _, err = cli("export", str(run), flag, str(out))
            assert code == 0, err
        predictor = Predictor(load_trained(resolve(run)), max_new_tokens=MAX_NEW)
        prompt = single_prompt(QUESTION, images=[image])
        inputs = predictor.inputs(prompt)
        enc = predictor.encoder
        question_only = prompt.sample.with_turns(prompt.sample.turns[:1])
        messages = enc.chat.messages(question_only, enc.system_prompt, [], enc.max_images)
        text = enc.chat.render(messages, add_generation_prompt=True)
        with torch.no_grad():
            logits = predictor.model(**inputs).logits
            base = load_model(resolve(run).spec.model).model.eval()  # type: ignore[union-attr]
            base_logits = base(**inputs).logits
        save_file({k: v.contiguous() for k, v in inputs.items()}, str(folder / f"{family}.in"))
        jobs.append(
            {
                "merged": str(merged),
                "adapter": str(adapter),
                "inputs": str(folder / f"{family}.in"),
                "result": str(folder / f"{family}.out"),
                "image": image,
                "text": text,
                "add_special_tokens": enc.chat.add_special_tokens(text),
                "max_new_tokens": MAX_NEW,
                "stop_ids": predictor.stop_ids,
                "pad_id": predictor.pad_id,
            }
        )
        refs[family] = {
            "run": run,
            "image": image,
            "merged": merged,
            "adapter": adapter,
            "logits": logits,
            "base_logits": base_logits,
            "inputs": inputs,
            "text": predictor.generate([prompt])[0],
            "tokenizer": predictor.tokenizer,
        }
    (folder / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("load_without_vlaunch.py")),
         str(folder / "jobs.json")],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    for family, job in zip(FAMILIES, jobs, strict=True):
        refs[family]["fresh"] = load_file(job["result"])
        refs[family]["info"] = info[job["merged"]]
    return refs


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_export_loads_without_vlaunch(roundtrips: dict[str, Any], family: str) -> None:
    ref = roundtrips[family]
    fresh = ref["fresh"]
    diff = float((fresh["logits"] - ref["logits"]).abs().max())
    moved = float((ref["logits"] - ref["base_logits"]).abs().max())
    adapter_diff = float((fresh["adapter_logits"] - ref["logits"]).abs().max())
    print(
        f"\n{family}: merged vs base+adapter max|dlogits| {diff:.2g} (training moved them "
        f"{moved:.2g}); PEFT-only adapter {adapter_diff:.2g}; {ref['info']}"
    )
    assert moved > 100 * LOGITS_ATOL  # the comparison can tell a trained model from the base
    assert diff <= LOGITS_ATOL
    assert adapter_diff <= ADAPTER_ATOL
    merged = ref["merged"]
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "processor_config.json",
    ):
        assert (merged / name).is_file(), name
    assert ref["info"]["non_lora"] == (family == "llava_next")  # image_newline
    # The greedy answer: vlaunch's generation = transformers' own generate on the export.
    new = fresh["generated"][0, ref["inputs"]["input_ids"].shape[1] :].tolist()
    cut = next((k for k, t in enumerate(new) if t in ref["tokenizer"].all_special_ids), len(new))
    assert ref["tokenizer"].decode(new[:cut], skip_special_tokens=True).strip() == ref["text"]


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_of_the_export_encodes_like_the_run(
    roundtrips: dict[str, Any], family: str
) -> None:
    ref = roundtrips[family]
    fresh = ref["fresh"]
    assert fresh["processor_input_ids"].tolist() == ref["inputs"]["input_ids"].tolist()
    assert (fresh["processor_pixel_values"] - ref["inputs"]["pixel_values"]).abs().max() < 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_infer_gives_the_same_text_both_ways(
    roundtrips: dict[str, Any], family: str, tmp_path: Path
) -> None:
    """From the run directory, the merged folder and the adapter folder: the same greedy
    text, for an image and (families that take frames) for a video."""
    from vlaunch_core.data.synth import write_video

    video = tmp_path / "move.mp4"
    write_video(video, "right", (200, 30, 30), "circle", (240, 240, 240), frames=6)
    ref = roundtrips[family]
    cases = [  # all three families take several images, hence video frames
        ["--image", ref["image"], "--prompt", QUESTION],
        ["--video", str(video), "--prompt", "Which way does the shape move?"],
    ]
    for case in cases:
        answers = []
        for source in (ref["run"], ref["merged"], ref["adapter"]):
            code, out, err = cli("infer", str(source), *case, "--max-new-tokens", str(MAX_NEW))
            assert code == 0, err
            answers.append(out.strip())
        assert answers[0] == answers[1] == answers[2], case
        if case[0] == "--image":
            assert answers[0] == ref["text"]
