"""The synthetic shapes dataset: answers that need the image, both formats, held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vlaunch_core.data.formats import iter_samples
from vlaunch_core.data.media import load_image, load_video
from vlaunch_core.data.synth import COLOURS


def test_files_and_meta(shapes: Path) -> None:
    meta = json.loads((shapes / "meta.json").read_text())
    for name, count in meta["files"].items():
        records = list(iter_samples(str(shapes / name)))
        assert len(records) == count
        assert all(r.sample is not None and not r.problems for r in records)
    chance = {k: v["chance"] for k, v in meta["questions"].items()}
    assert chance == {
        "colour": 0.2,
        "shape": 0.3333,
        "count": 0.25,
        "position": 0.25,
        "direction": 0.25,
    }
    assert (shapes / "kinds_train.jsonl").read_text().startswith('{"id"')  # JSON Lines
    assert (shapes / "train.json").read_text().startswith("[")
    assert list((shapes / "images").glob("*.jpg")) and list((shapes / "images").glob("*.png"))


def test_colour_answers_are_in_the_image(shapes: Path) -> None:
    for rec in iter_samples(str(shapes / "eval.json")):
        s = rec.sample
        assert s is not None
        img = np.asarray(load_image(shapes / s.images[0], 10**6)).reshape(-1, 3).astype(int)
        want = np.array(COLOURS[s.turns[1].text])
        assert (np.abs(img - want).sum(axis=1) < 60).sum() > 50  # the shape has that colour


def test_held_out_split_uses_other_images(shapes: Path) -> None:
    def images(name: str) -> set[bytes]:
        return {
            Image.open(shapes / r.sample.images[0]).tobytes()  # type: ignore[union-attr]
            for r in iter_samples(str(shapes / name))
        }

    assert not images("train.json") & images("eval.json")


def test_video_moves_the_way_the_answer_says(shapes: Path) -> None:
    for rec in iter_samples(str(shapes / "video_train.json")):
        s = rec.sample
        assert s is not None
        frames = load_video(shapes / s.videos[0], 2).astype(int)
        centres = []
        for f in frames:
            mask = np.abs(f - np.median(f.reshape(-1, 3), axis=0)).sum(-1) > 90
            ys, xs = np.nonzero(mask)
            centres.append((xs.mean(), ys.mean()))
        dx, dy = centres[1][0] - centres[0][0], centres[1][1] - centres[0][1]
        moved = (
            ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        )
        assert moved == s.turns[1].text


def test_same_seed_same_data(tmp_path: Path) -> None:
    from vlaunch_core.data.synth import SynthSizes, synthesize

    sizes = SynthSizes(train=6, eval=2, video_train=1, video_eval=1)
    synthesize(tmp_path / "a", sizes, seed=5)
    synthesize(tmp_path / "b", sizes, seed=5)
    for name in ("train.json", "kinds_train.jsonl", "video_eval.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
