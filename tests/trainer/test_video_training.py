"""Training on videos through the real loop (this process, world 1, no Ray).

Qwen2-VL and LLaVA-NeXT-Video runs on the synthetic moving-shape mp4s: every training forward
gets `pixel_values_videos` from the family's own video processor (Qwen2-VL: with
`video_grid_thw`, 4 frames = 2 temporal patches) and no frames as images, and the loss goes
down over 4 steps, on the training batches and on the same held-out videos before and after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.trainer.helpers import records, write_job

FAMILIES = ("qwen2_vl", "llava_next_video")
NUM_FRAMES = 4
STEPS = 4


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training and 4 held-out videos (and a few images the dataset writer always makes)."""
    from vlaunch_core.data.synth import SynthSizes, synthesize

    folder = tmp_path_factory.mktemp("videos")
    synthesize(folder, SynthSizes(train=4, eval=2, video_train=8, video_eval=4), seed=11)
    return folder


def _job(folder: Path, videos: Path, family: str) -> Path:
    def entry(split: str) -> dict[str, Any]:
        return {"data_path": str(videos / f"video_{split}.json"), "media_dir": str(videos),
                "is_video": True}  # fmt: skip

    return write_job(
        folder,
        videos,
        name=family,
        model={"name_or_path": f"tiny:{family}"},
        data={
            "datasets": {"video_train": entry("train"), "video_eval": entry("eval")},
            "mixture": "video_train",
            "eval_mixture": "video_eval",
            "video": {"num_frames": NUM_FRAMES},
        },
        tuning={"preset": "lora_llm"},
        train={
            "max_steps": STEPS,
            "checkpoint_every": STEPS,
            "global_batch_size": 4,
            "micro_batch_size": 2,
            "lr": 1e-2,
            "warmup_steps": 0,
        },
        resources={"profile": "cpu", "gpus_per_node": 1},
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_trains_on_videos_through_the_video_processor(
    videos: Path, tmp_path: Path, family: str
) -> None:
    import json

    import torch

    from trainer.loop import Recipe
    from vlaunch_core.spec_load import load_spec

    seen: list[dict[str, Any]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if module.training:  # the training steps (evaluation runs in eval mode)
            seen.append({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)})

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on a busy 2-core box
    recipe = Recipe(load_spec(_job(tmp_path, videos, family)), quiet=True)
    try:
        recipe.setup()
        hook = recipe.strategy.base_model.register_forward_pre_hook(record, with_kwargs=True)
        result = recipe.train()
        hook.remove()
    finally:
        recipe.cleanup()
        torch.set_num_threads(threads)
    assert result.state == "finished" and result.step == STEPS

    assert len(seen) == STEPS * 2  # two micro batches of 2 per step
    for inputs in seen:
        assert "pixel_values_videos" in inputs and "pixel_values" not in inputs, sorted(inputs)
        assert inputs["input_ids"].shape[0] == 2
        if family == "qwen2_vl":
            temporal = recipe.processor.video_processor.temporal_patch_size
            assert inputs["video_grid_thw"][:, 0].tolist() == [NUM_FRAMES // temporal] * 2
        else:  # (videos, frames, channels, height, width)
            assert tuple(inputs["pixel_values_videos"].shape[:2]) == (2, NUM_FRAMES)

    losses = [r["loss"] for r in records(result.run_dir)]
    evaluation = json.loads((result.run_dir / "eval.json").read_text())
    print(f"\n{family}: train loss {' '.join(f'{x:.3f}' for x in losses)}; held-out "
          f"{evaluation['loss_before']:.3f} -> {evaluation['loss_after']:.3f}")  # fmt: skip
    assert len(losses) == STEPS
    assert losses[-1] < losses[0]
    assert evaluation["loss_after"] < evaluation["loss_before"]
