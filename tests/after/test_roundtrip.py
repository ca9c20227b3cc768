"""Train every family, export it three ways, use the exports in a fresh interpreter WITHOUT
vlaunch (`load_without_vlaunch.py`: transformers, PEFT, Pillow and PyAV only).

Each family's run (2 steps, in this process) has trained weights the exports must carry:
- llava_next and llava_next_video, `lora_llm`: LoRA on the LM, the projector in full (PEFT
  modules_to_save) and the bare `image_newline` (non_lora_trainables.safetensors);
- qwen2_vl, `ln_vt_lora_llm`: LoRA on the LM, the vision tower's norms and the merger;
- qwen2_5_vl and idefics3, `lora_vt_llm`: LoRA on the vision tower and the LM, the projector;
- llava, paligemma and mllama, `lora_llm` with the projector frozen: LoRA on the LM only, so
  their LLM-only adapter is the whole trained model.

Exports: `--merge`, `--adapter-only` and `--llm-only-adapter` (`--drop-non-llm` where the run
trained more than the LM). Each loads with `AutoModelForImageTextToText.from_pretrained` and
`AutoProcessor.from_pretrained` of its folder (adapters: transformers loads the base and applies
the adapter with PEFT). The export's processor renders the run's prompt with its chat
template and encodes it exactly as the run does; the merged model generates the same greedy
text as `vlaunch infer RUN`, for an image and, for the families with a video processor
(qwen2_vl, qwen2_5_vl, llava_next_video), for a video passed as `videos=`.

Tolerances (fp32 on CPU), max abs logit difference to base + adapter as vlaunch loads it:
- merged: <= 2e-5. Merging computes x(W + sBA)^T where the adapter computes xW^T + s(xA^T)B^T:
  the same terms summed in another order, so the logits differ by rounding only. They are at
  most 3 to 7 in size here, where one fp32 ulp is 2.4e-7 to 4.8e-7; measured 1.5e-6 (paligemma)
  to 6.2e-6 (llava, the largest logits): 3 to 13 ulps, images and videos alike. 2e-5 is 40
  to 80 ulps, and 1e5 times less than what two training steps moved the logits (2.5 to 5.8).
- adapter (transformers + PEFT, or PeftModel) and LLM-only adapter: <= 1e-5; they run the very
  same modules as vlaunch's PeftModel (measured 0).
- the export's processor against the run's encoder: ids equal, pixel values <= 1e-6 (the same
  processor on the same pixels; measured 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.after.helpers import cli, train_here
from tests.trainer.helpers import run_without_vlaunch

FAMILIES: dict[str, dict[str, str]] = {
    "llava": {"preset": "lora_llm", "projector": "frozen"},
    "llava_next": {"preset": "lora_llm"},
    "llava_next_video": {"preset": "lora_llm"},
    "qwen2_vl": {"preset": "ln_vt_lora_llm"},
    "qwen2_5_vl": {"preset": "lora_vt_llm"},
    "idefics3": {"preset": "lora_vt_llm"},
    "paligemma": {"preset": "lora_llm", "projector": "frozen"},
    "mllama": {"preset": "lora_llm", "projector": "frozen"},
}
LM_ONLY = tuple(f for f, t in FAMILIES.items() if t.get("projector") == "frozen")
VIDEO = ("llava_next_video", "qwen2_vl", "qwen2_5_vl")
"""Families whose processor has a video processor: videos go in as `videos=`."""
NON_LORA = ("llava_next", "llava_next_video")
"""`image_newline` is a bare parameter: PEFT's modules_to_save cannot hold it."""
EXPORTS = ("merged", "adapter", "peft", "llm_only")
"""`peft`: the adapter folder through `PeftModel.from_pretrained` instead of transformers."""
MAX_NEW = 6
LOGITS_ATOL = 2e-5
ADAPTER_ATOL = 1e-5
ENCODING_ATOL = 1e-6
QUESTION = "What colour is the shape? Answer with one word."
VIDEO_QUESTION = "Which way does the shape move?"


def _infer(source: Path, *media: str, prompt: str) -> str:
    code, out, err = cli("infer", str(source), *media, "--prompt", prompt,
                         "--max-new-tokens", str(MAX_NEW))  # fmt: skip
    assert code == 0, err
    return out.strip()


@pytest.fixture(scope="module")
def roundtrips(tmp_path_factory: pytest.TempPathFactory, shapes: Path) -> dict[str, Any]:
    """Per family: what vlaunch computes (inputs, logits, `vlaunch infer` text) and what the
    fresh process computed from the exports."""
    import torch
    from safetensors.torch import load_file, save_file

    from trainer.infer import Predictor, single_prompt
    from trainer.models.loading import load_model
    from trainer.trained import load_trained, resolve
    from vlaunch_core.data.synth import write_video

    folder = tmp_path_factory.mktemp("roundtrip")
    image = str(next(iter(sorted((shapes / "images").glob("eval_*.png")))))
    video = folder / "move.mp4"  # 8 frames at 8 fps: `vlaunch infer` samples each frame once
    write_video(video, "right", (200, 30, 30), "circle", (240, 240, 240))
    jobs: list[dict[str, Any]] = []
    refs: dict[str, Any] = {}
    for family, tuning in FAMILIES.items():
        run = train_here(
            folder,
            shapes,
            family,
            model={"name_or_path": f"tiny:{family}"},
            tuning={**tuning, "lora": {"dropout": 0.0}},
            train={"lr": 1e-2},
        )
        exports = {e: folder / f"{family}-{e}" for e in ("merged", "adapter", "llm_only")}
        flags = {"merged": ["--merge"], "adapter": ["--adapter-only"],
                 "llm_only": ["--llm-only-adapter"]}  # fmt: skip
        if family not in LM_ONLY:
            flags["llm_only"].append("--drop-non-llm")
        for name, out in exports.items():
            code, _, err = cli("export", str(run), flags[name][0], str(out), *flags[name][1:])
            assert code == 0, err
        predictor = Predictor(load_trained(resolve(run)), max_new_tokens=MAX_NEW)
        llm_only = load_trained(resolve(exports["llm_only"])).model  # as `vlaunch infer` has it
        base = load_model(resolve(run).base_model_spec()).model.eval()
        enc = predictor.encoder
        prompts = {"image": single_prompt(QUESTION, images=[image])}
        texts = {"image": _infer(run, "--image", image, prompt=QUESTION)}
        if family in VIDEO:
            prompts["video"] = single_prompt(VIDEO_QUESTION, videos=[video])
            texts["video"] = _infer(run, "--video", str(video), prompt=VIDEO_QUESTION)
        cases: dict[str, Any] = {}
        ref: dict[str, Any] = {"run": run, "image_path": image, **exports}
        for case, prompt in prompts.items():
            inputs = predictor.inputs(prompt)
            question = prompt.sample.with_turns(prompt.sample.turns[:1])
            messages = enc.chat.messages(question, enc.system_prompt, [], enc.max_images)
            rendered = enc.chat.render(messages, add_generation_prompt=True)
            with torch.no_grad():
                ref[case] = {
                    "inputs": inputs,
                    "text": texts[case],
                    "rendered": rendered,
                    "logits": predictor.model(**inputs).logits,
                    "base_logits": base(**inputs).logits,
                    "llm_only_logits": llm_only(**inputs).logits,
                }
            path = folder / f"{family}.{case}.in"
            save_file({k: v.contiguous() for k, v in inputs.items()}, str(path))
            cases[case] = {
                "inputs": str(path),
                "messages": messages,
                "image": image if case == "image" else None,
                "video": str(video) if case == "video" else None,
                "add_special_tokens": enc.chat.add_special_tokens(rendered),
            }
        ref["llm_only_text"] = _infer(exports["llm_only"], "--image", image, prompt=QUESTION)
        ref["tokenizer"] = predictor.tokenizer
        refs[family] = ref
        jobs.append(
            {
                "exports": {
                    "merged": str(exports["merged"]),
                    "adapter": str(exports["adapter"]),
                    "peft": str(exports["adapter"]),
                    "llm_only": str(exports["llm_only"]),
                },
                "cases": cases,
                "max_new_tokens": MAX_NEW,
                "stop_ids": predictor.stop_ids,
                "pad_id": predictor.pad_id,
                "result": str(folder / f"{family}.out"),
            }
        )
    report = run_without_vlaunch(Path(__file__).with_name("load_without_vlaunch.py"), jobs, folder)
    for family, job in zip(FAMILIES, jobs, strict=True):
        refs[family]["fresh"] = load_file(job["result"])
        refs[family]["info"] = report[job["result"]]
    return refs


def _answer(ref: dict[str, Any], export: str, case: str) -> str:
    """The fresh process's greedy answer, cut and decoded as `vlaunch infer` does."""
    tokenizer = ref["tokenizer"]
    fresh = ref["fresh"]
    prompt_len = fresh[f"{export}.{case}.enc.input_ids"].shape[1]
    new = fresh[f"{export}.{case}.generated"][0, prompt_len:].tolist()
    cut = next((k for k, t in enumerate(new) if t in tokenizer.all_special_ids), len(new))
    return str(tokenizer.decode(new[:cut], skip_special_tokens=True).strip())


def _max_diff(a: Any, b: Any) -> float:
    return float((a.double() - b.double()).abs().max())


def _encodes_like_the_run(ref: dict[str, Any], export: str, case: str) -> None:
    """The export's processor, on the export's own rendering of the prompt, gives the tensors
    vlaunch's encoder gave (ids and grids exactly, pixel values to ENCODING_ATOL)."""
    assert ref["info"][export]["text"][case] == ref[case]["rendered"]
    fresh = ref["fresh"]
    for key, want in ref[case]["inputs"].items():
        got = fresh[f"{export}.{case}.enc.{key}"]
        assert got.shape == want.shape, (key, got.shape, want.shape)
        if want.is_floating_point():
            assert _max_diff(got, want) <= ENCODING_ATOL, key
        else:
            assert got.tolist() == want.tolist(), key


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_export_loads_without_vlaunch(roundtrips: dict[str, Any], family: str) -> None:
    ref = roundtrips[family]
    fresh, info = ref["fresh"], ref["info"]["merged"]
    diff = _max_diff(fresh["merged.image.logits"], ref["image"]["logits"])
    moved = _max_diff(ref["image"]["logits"], ref["image"]["base_logits"])
    scale = float(ref["image"]["logits"].abs().max())
    print(f"\n{family}: merged vs base+adapter max|dlogits| {diff:.2g} (max|logit| {scale:.2g}, "
          f"training moved them {moved:.2g}); {info['model']}, {info['processor']}")  # fmt: skip
    assert moved > 100 * LOGITS_ATOL  # the comparison can tell a trained model from the base
    assert diff <= LOGITS_ATOL
    assert not info["peft"]
    for name in ("config.json", "generation_config.json", "model.safetensors",
                 "tokenizer.json", "chat_template.jinja", "processor_config.json"):  # fmt: skip
        assert (ref["merged"] / name).is_file(), name
    _encodes_like_the_run(ref, "merged", "image")
    assert _answer(ref, "merged", "image") == ref["image"]["text"]  # `vlaunch infer RUN`


@pytest.mark.parametrize("family", VIDEO)
def test_merged_export_answers_a_video_like_vlaunch_infer(
    roundtrips: dict[str, Any], family: str
) -> None:
    """`videos=` through the export's own video processor: `pixel_values_videos` (Qwen: with
    `video_grid_thw`) as the run encodes them, and the answer of `vlaunch infer RUN --video`."""
    ref = roundtrips[family]
    fresh, info = ref["fresh"], ref["info"]["merged"]
    assert info["video_processor"] != "NoneType", info
    inputs = ref["video"]["inputs"]
    assert "pixel_values_videos" in inputs and "pixel_values" not in inputs
    assert ("video_grid_thw" in inputs) == family.startswith("qwen")
    _encodes_like_the_run(ref, "merged", "video")
    diff = _max_diff(fresh["merged.video.logits"], ref["video"]["logits"])
    moved = _max_diff(ref["video"]["logits"], ref["video"]["base_logits"])
    print(f"\n{family} video: merged vs base+adapter max|dlogits| {diff:.2g} (moved {moved:.2g})")
    assert moved > 100 * LOGITS_ATOL
    assert diff <= LOGITS_ATOL
    assert _answer(ref, "merged", "video") == ref["video"]["text"]


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_export_loads_with_transformers_and_peft(
    roundtrips: dict[str, Any], family: str
) -> None:
    ref = roundtrips[family]
    fresh, info = ref["fresh"], ref["info"]
    assert info["adapter"]["peft"]  # transformers applied the adapter it found in the folder
    assert (ref["adapter"] / "non_lora_trainables.safetensors").is_file() == (family in NON_LORA)
    for export in ("adapter", "peft"):
        for case in [c for c in ("image", "video") if c in ref]:
            diff = _max_diff(fresh[f"{export}.{case}.logits"], ref[case]["logits"])
            print(f"\n{family} {export} {case}: max|dlogits| {diff:.2g}")
            assert diff <= ADAPTER_ATOL
            _encodes_like_the_run(ref, export, case)
            assert _answer(ref, export, case) == ref[case]["text"]


@pytest.mark.parametrize("family", FAMILIES)
def test_llm_only_export_loads_and_answers(roundtrips: dict[str, Any], family: str) -> None:
    """What a user does with the LLM-only adapter, short of vLLM: transformers + PEFT apply it
    to the base and its processor prompts it. For an LM-only run that is the trained model;
    with --drop-non-llm it is the model `vlaunch infer OUT` runs, which is not the trained
    one."""
    ref = roundtrips[family]
    fresh, info = ref["fresh"], ref["info"]["llm_only"]
    assert info["peft"]
    folder = ref["llm_only"]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["modules_to_save"] is None and isinstance(config["lora_alpha"], int)
    readme = (folder / "README.md").read_text()
    assert f"vllm serve {config['base_model_name_or_path']} --enable-lora" in readme
    _encodes_like_the_run(ref, "llm_only", "image")
    diff = _max_diff(fresh["llm_only.image.logits"], ref["image"]["llm_only_logits"])
    assert diff <= ADAPTER_ATOL
    assert _answer(ref, "llm_only", "image") == ref["llm_only_text"]
    to_run = _max_diff(ref["image"]["llm_only_logits"], ref["image"]["logits"])
    if family in LM_ONLY:
        assert to_run == 0.0
        assert ref["llm_only_text"] == ref["image"]["text"]
    else:
        assert to_run > 100 * LOGITS_ATOL  # the dropped weights were really trained
        assert "--drop-non-llm" in readme


@pytest.mark.parametrize("family", ["llava_next", "qwen2_vl", "idefics3"])
def test_infer_gives_the_same_text_both_ways(
    roundtrips: dict[str, Any], family: str, tmp_path: Path
) -> None:
    """From the run directory, the merged folder and the adapter folder: the same greedy
    text, for an image and a video (video processor or frames as images)."""
    from vlaunch_core.data.synth import write_video

    video = tmp_path / "move.mp4"
    write_video(video, "right", (200, 30, 30), "circle", (240, 240, 240), frames=6)
    ref = roundtrips[family]
    cases = [  # all three families take several images, hence video frames
        ["--image", ref["image_path"]],
        ["--video", str(video)],
    ]
    for case in cases:
        answers = [
            _infer(source, *case, prompt=QUESTION if case[0] == "--image" else VIDEO_QUESTION)
            for source in (ref["run"], ref["merged"], ref["adapter"])
        ]
        assert answers[0] == answers[1] == answers[2], case
        if case[0] == "--image":
            assert answers[0] == ref["image"]["text"]
