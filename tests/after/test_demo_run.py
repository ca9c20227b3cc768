"""`vlaunch eval`, `report` and `infer` on the session's demo-like run (two DDP ranks).

`vlaunch eval` replays the run's own evaluation (its two ranks' shards, its batch size), so it
must print exactly the accuracy the run printed and the same held-out loss; measured: equal
accuracy, loss difference 0.0 (bitwise), on a model that is right on ~3/4 of the samples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.after.helpers import cli


@pytest.fixture(scope="module")
def evaluated(demo_run: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(eval.json before `vlaunch eval`, after it, the command's stdout)."""
    before = json.loads((demo_run / "eval.json").read_text())
    code, out, err = cli("eval", str(demo_run))
    assert code == 0, err
    after = json.loads((demo_run / "eval.json").read_text())
    return before, after, out


def test_eval_reproduces_the_accuracy_the_run_printed(evaluated) -> None:  # type: ignore[no-untyped-def]
    before, after, out = evaluated
    mine = after["evaluations"]["shapes_eval @ final"]
    print(
        f"\nrun printed {before['accuracy_after']:.1%} (loss {before['loss_after']:.6f}); "
        f"vlaunch eval: {mine['accuracy']:.1%} (loss {mine['loss']:.6f}, "
        f"diff {abs(mine['loss'] - before['loss_after']):.2g})"
    )
    assert before["accuracy_before"] < before["accuracy_after"]  # the run learnt something
    assert mine["accuracy"] == before["accuracy_after"]
    assert mine["total"] == before["num_samples"] == 40
    assert mine["loss"] == pytest.approx(before["loss_after"], rel=1e-9, abs=0)
    assert mine["step"] == 50 and mine["shards"] == 2
    # The trainer's numbers are kept; the table shows the accuracy.
    for key in ("accuracy_before", "accuracy_after", "loss_before", "chance", "examples_after"):
        assert after[key] == before[key], key
    assert f"{mine['accuracy']:.1%} ({mine['correct']}/40)" in out


def test_eval_of_a_checkpoint_and_other_data(demo_run: Path, shapes: Path, tmp_path: Path) -> None:
    data = _dataset_file(shapes, tmp_path, "train.json", 6)
    out = tmp_path / "ev.json"
    code, _, err = cli(
        "eval", str(demo_run), "--checkpoint", "step-25", "--data", str(data),
        "--output", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    ev = json.loads(out.read_text())["evaluations"]["train @ step-25"]
    assert ev["step"] == 25 and ev["total"] == 6
    assert 0 < ev["loss"] < 6
    code, _, err = cli("eval", str(demo_run), "--data", "no_such_set")
    assert code == 2 and "unknown dataset 'no_such_set'" in err
    code, _, err = cli("eval", str(demo_run), "--checkpoint", "step-7")
    assert code == 2 and "no checkpoint at step 7" in err and "step-25, step-50" in err


def test_report_has_the_curves(demo_run: Path, tmp_path: Path, evaluated) -> None:  # type: ignore[no-untyped-def]
    import base64
    import io
    import re

    from PIL import Image

    code, out, err = cli("report", str(demo_run), "--output", str(tmp_path / "r.html"))
    assert code == 0, err
    assert out.strip() == f"report: {tmp_path / 'r.html'}"
    page = (tmp_path / "r.html").read_text()
    for text in (
        "Loss",
        "Learning rate",
        "Plan",
        "16 = micro 8 x accumulation 1 x world 2",
        "predicted peak per device",
        "tokens / s",
        "Held-out evaluation",
        "shapes_eval",
        "exact match",
        "Tuning (llava)",
    ):
        assert text in page, text
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 3  # loss, learning rate, throughput
    for data in pngs:
        _check_png(Image.open(io.BytesIO(base64.b64decode(data))))

    code, _, err = cli(
        "report", str(demo_run), "--format", "md", "--output", str(tmp_path / "md" / "r.md")
    )
    assert code == 0, err
    md = (tmp_path / "md" / "r.md").read_text()
    assert "![Loss](r_files/loss.png)" in md and "![Learning rate](r_files/lr.png)" in md
    _check_png(Image.open(tmp_path / "md" / "r_files" / "loss.png"))


def _dataset_file(shapes: Path, folder: Path, name: str, n: int) -> Path:
    """The first `n` samples of a shapes split, with their images, copied into `folder`."""
    rows = json.loads((shapes / name).read_text())[:n]
    (folder / "images").mkdir(exist_ok=True)
    for r in rows:
        shutil.copy(shapes / r["image"], folder / r["image"])
    out = folder / name
    out.write_text(json.dumps(rows))
    return out


def _check_png(image) -> None:  # type: ignore[no-untyped-def]
    assert image.format == "PNG"
    assert image.width >= 400 and image.height >= 200
    colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 10  # curves, axes, text: not a blank canvas


def test_infer_answers_like_the_evaluation(demo_run: Path, shapes: Path, tmp_path: Path) -> None:
    """The run directory and its merged export give the same greedy answers; the batch mode
    scores them against the references."""
    sample = json.loads((shapes / "eval.json").read_text())[0]
    image = str(shapes / sample["image"])
    question = sample["conversations"][0]["value"].replace("<image>\n", "")
    code, from_run, err = cli("infer", str(demo_run), "--image", image, "--prompt", question)
    assert code == 0, err
    merged = tmp_path / "merged"
    code, _, err = cli("export", str(demo_run), "--merge", str(merged))
    assert code == 0, err
    code, from_merged, err = cli("infer", str(merged), "--image", image, "--prompt", question)
    assert code == 0, err
    assert from_run == from_merged and from_run.strip()

    rows = json.loads(_dataset_file(shapes, tmp_path, "eval.json", 6).read_text())
    rows.append({"image": rows[0]["image"], "conversations": [rows[0]["conversations"][0]]})
    batch = tmp_path / "batch.jsonl"  # JSON Lines, the last sample a question only
    batch.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds = tmp_path / "pred.jsonl"
    code, out, err = cli("infer", str(demo_run), "--batch", str(batch), "--output", str(preds))
    assert code == 0, err
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(lines) == 7 and "reference" not in lines[-1]
    assert lines[0]["prediction"] == from_run.strip() == lines[-1]["prediction"]
    assert all(("exact_match" in r) == ("reference" in r) for r in lines)
    assert "predictions written" in out and "exact match" in out


def test_infer_errors(demo_run: Path, shapes: Path, tmp_path: Path) -> None:
    code, _, err = cli(
        "infer", str(demo_run), "--image", str(tmp_path / "nope.png"), "--prompt", "hi"
    )
    assert code == 2 and "nope.png: no such file" in err
    # A run that has not saved anything yet.
    empty = tmp_path / "fresh"
    empty.mkdir()
    shutil.copy(demo_run / "spec.yaml", empty / "spec.yaml")
    code, _, err = cli("infer", str(empty), "--image", "x.png", "--prompt", "hi")
    assert code == 2 and "has no trained weights yet" in err
    # Media escaping the batch file's folder are refused before anything is loaded.
    batch = tmp_path / "b.jsonl"
    batch.write_text(
        json.dumps(
            {
                "image": "../../etc/passwd",
                "conversations": [{"from": "human", "value": "<image>\nWhat?"}],
            }
        )
        + "\n"
    )
    code, _, err = cli(
        "infer", str(demo_run), "--batch", str(batch), "--output", str(tmp_path / "p.jsonl")
    )
    assert code == 2 and "outside the media root" in err and "b.jsonl sample 0" in err
    code, _, err = cli("infer", str(tmp_path / "missing"), "--prompt", "x")
    assert code == 2 and "no such run, adapter or model folder" in err
