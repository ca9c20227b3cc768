"""What the trainer calls: build_train_data / build_eval_data on real files and processors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.data.helpers import vila, write_json
from trainer.data.build import build_eval_data, build_train_data, generation_prompts
from trainer.data.encode import IGNORE_INDEX
from trainer.models.tiny.tokenizer import TURN_END, TURN_START
from vlaunch_core.errors import ProblemReport, UserError
from vlaunch_core.spec import JobSpec
from vlaunch_core.spec_load import load_spec


def make_spec(
    tmp_path: Path, shapes: Path, mixture: str = "img", model: str = "tiny:llava", **data: Any
) -> JobSpec:
    (tmp_path / "reg.yaml").write_text(
        yaml.safe_dump(
            {
                "img": {"data_path": str(shapes / "train.json")},
                "img_eval": {"data_path": str(shapes / "eval.json")},
                "kinds": {"data_path": str(shapes / "kinds_train.jsonl"), "format": "messages"},
                "video": {"data_path": str(shapes / "video_train.json"), "is_video": True},
            }
        )
    )
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "model": {"name_or_path": model},
                "data": {
                    "registry": ["reg.yaml"],
                    "mixture": mixture,
                    "eval_mixture": "img_eval",
                    "max_length": 512,
                    **data,
                },
                "resources": {"profile": "cpu", "gpus_per_node": 2},
                "train": {"global_batch_size": 8, "seed": 5},
            }
        )
    )
    return load_spec(job)


def test_train_batches_across_ranks(
    tmp_path: Path, shapes: Path, tiny_processor: Callable[[str], Any]
) -> None:
    spec = make_spec(tmp_path, shapes, "img+kinds*2")
    processor, family = tiny_processor("llava")
    datas = [
        build_train_data(spec, processor, family, rank=r, world_size=2, micro_batch_size=2)
        for r in range(2)
    ]
    assert len(datas[0].dataset) == 24 + 2 * 30
    assert datas[0].sampler.steps_per_epoch == (24 + 60) // 8
    for data in datas:
        data.sampler.start_at(3)
        micro = list(data.sampler)
        batches = list(data.loader())
        assert len(batches) == len(micro) == (data.sampler.steps_per_epoch - 3) * 2
        for b, indices in zip(batches, micro, strict=True):
            assert b.num_samples == 2
            assert b.inputs["pixel_values"].shape[0] == 2
            assert b.num_label_tokens == int((b.inputs["labels"] != IGNORE_INDEX).sum()) > 0
            again = data.collator([data.dataset[i] for i in indices])
            assert b.inputs["input_ids"].tolist() == again.inputs["input_ids"].tolist()
    # The two ranks' first two micro-batches are step 3's global batch.
    from vlaunch_core.data.sampler import epoch_order

    step3 = datas[0].sampler.global_batch(epoch_order(len(datas[0].dataset), 5, 0), 3)
    firsts = [i for d in datas for m in list(d.sampler)[:2] for i in m]
    assert sorted(firsts) == sorted(step3)


def test_packing_and_group_by_length(
    tmp_path: Path, shapes: Path, tiny_processor: Callable[[str], Any]
) -> None:
    processor, family = tiny_processor("llava")
    packed = build_train_data(
        make_spec(tmp_path, shapes, packing=True),
        processor,
        family,
        micro_batch_size=4,
        global_batch_size=8,
    )
    b = next(iter(packed.loader()))
    assert b.inputs["input_ids"].shape[0] == 1 and "attention_mask" not in b.inputs
    assert b.num_slots == b.num_tokens and b.num_samples == 4
    grouped = build_train_data(
        make_spec(tmp_path, shapes, "kinds", group_by_length=True),
        processor,
        family,
        micro_batch_size=4,
        global_batch_size=8,
    )
    assert grouped.sampler.group_by_length and grouped.sampler.lengths is not None
    # M-RoPE models pack (per-sample 3-D positions); Gemma 3's bidirectional image attention
    # does not, and says why
    qwen, qfam = tiny_processor("qwen2_vl")
    build_train_data(make_spec(tmp_path, shapes, packing=True), qwen, qfam, micro_batch_size=4)
    gemma, gfam = tiny_processor("gemma3")
    with pytest.raises(UserError, match=r"data\.packing is not supported for gemma3: its image"):
        build_train_data(make_spec(tmp_path, shapes, packing=True), gemma, gfam, micro_batch_size=4)


def test_a_packed_run_attends_per_sample(tmp_path: Path, shapes: Path) -> None:
    """`build_model` gives a packed run's model vlaunch's per-sample sdpa (every sub-model),
    and leaves an unpacked run's on sdpa; tests/data/test_packing.py checks its logits."""
    from trainer.api import build_model
    from trainer.models.packed_attention import NAME

    packed = build_model(make_spec(tmp_path, shapes, packing=True), "fp32").model
    assert packed.config._attn_implementation == NAME
    assert packed.config.vision_config._attn_implementation == NAME
    padded = build_model(make_spec(tmp_path, shapes), "fp32").model
    assert padded.config._attn_implementation == "sdpa"


def test_videos_train_as_videos_or_are_refused(
    tmp_path: Path, shapes: Path, tiny_processor: Callable[[str], Any]
) -> None:
    spec = make_spec(tmp_path, shapes, "video", video={"num_frames": 4})
    processor, family = tiny_processor("qwen2_vl")
    data = build_train_data(spec, processor, family, micro_batch_size=2)
    b = next(iter(data.loader()))
    # one video per sample, 4 frames = 2 temporal patches each, through the video processor
    assert b.inputs["video_grid_thw"][:, 0].tolist() == [2, 2]
    assert "pixel_values_videos" in b.inputs and "pixel_values" not in b.inputs
    llava, lfam = tiny_processor("llava")
    with pytest.raises(ProblemReport, match="takes neither videos"):
        build_train_data(spec, llava, lfam, micro_batch_size=2)


def test_broken_data_stops_before_training(
    tmp_path: Path, shapes: Path, tiny_processor: Callable[[str], Any]
) -> None:
    bad = write_json(
        tmp_path / "bad.json",
        [
            vila(f"images/train_{i:06d}.{'png' if i % 2 == 0 else 'jpg'}", "<image>q", "a")
            for i in range(8)
        ]
        + [vila("images/gone.png", "<image>q", "a"), vila("../../etc/passwd", "<image>q", "a")],
    )
    spec = make_spec(tmp_path, shapes)
    from vlaunch_core.spec import DatasetEntry

    spec.data.datasets["bad"] = DatasetEntry(data_path=str(bad), media_dir=str(shapes))
    spec.data.mixture = "bad"
    processor, family = tiny_processor("llava")
    with pytest.raises(ProblemReport) as e:
        build_train_data(spec, processor, family, micro_batch_size=2)
    text = e.value.render()
    assert "bad.json sample 8" in text and "gone.png" in text
    assert "bad.json sample 9" in text and "outside the media root" in text


def test_overlength_samples_are_replaced_in_training(
    tmp_path: Path, shapes: Path, tiny_processor: Callable[[str], Any]
) -> None:
    rows = [vila("images/train_000000.png", "<image>q", "a")] * 7 + [
        vila("images/train_000000.png", "<image>" + "long " * 200, "a")
    ]
    data_file = write_json(tmp_path / "mixed.json", rows)
    spec = make_spec(tmp_path, shapes, shuffle=False, overlength="drop", max_length=64)
    from vlaunch_core.spec import DatasetEntry

    spec.data.datasets["mixed"] = DatasetEntry(data_path=str(data_file), media_dir=str(shapes))
    spec.data.mixture = "mixed"
    processor, family = tiny_processor("llava")
    data = build_train_data(spec, processor, family, micro_batch_size=8, world_size=1)
    (b,) = list(data.loader())
    assert b.num_samples == 8 and b.num_substituted == 1


def test_eval_data_and_generation_prompts(
    tmp_path: Path, shapes: Path, tiny_processor: Callable[[str], Any]
) -> None:
    spec = make_spec(tmp_path, shapes)
    processor, family = tiny_processor("llava")
    shards = [
        build_eval_data(spec, processor, family, rank=r, world_size=3, micro_batch_size=2)
        for r in range(3)
    ]
    indices = [i for d in shards for i in d.sampler.indices]
    assert sorted(indices) == list(range(8))
    batch = next(iter(shards[0].loader()))
    assert batch.num_samples == 2
    prompts = list(generation_prompts(shards[0].dataset, shards[0].sampler.indices))
    assert [p.index for p in prompts] == shards[0].sampler.indices
    # Every prompt ends with the question and the tiny ChatML template's generation prompt.
    end = f"What colour is the shape? Answer with one word.{TURN_END}\n{TURN_START}assistant\n"
    for p in prompts:
        assert p.answer in ("red", "green", "blue", "yellow", "purple")
        text = processor.tokenizer.decode(p.inputs["input_ids"][0])
        assert text.startswith(f"{TURN_START}user\n") and text.endswith(end)
