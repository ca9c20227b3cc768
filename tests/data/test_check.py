"""`data check` finds every planted fault with its sample index, in one pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.data.helpers import make_video, vila, write_json, write_jsonl
from vlaunch_core.data.check import CheckOptions, CheckSource, check_sources, percentile
from vlaunch_core.data.mixture import resolve_registry_mixture

LONG = "very " * 400


def faulty_dataset(folder: Path) -> tuple[Path, set[tuple[str, int]]]:
    """A JSON Lines dataset with a planted fault at known indices, and the expected finds."""
    (folder / "images").mkdir(parents=True)
    (folder / "videos").mkdir()
    Image.new("RGB", (16, 16), "red").save(folder / "images" / "ok.png")
    Image.new("RGB", (16, 16), "blue").save(folder / "images" / "ok.jpg")
    (folder / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    make_video(folder / "videos" / "ok.mp4", frames=8)
    (folder / "videos" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    (folder.parent / "outside.png").write_bytes((folder / "images" / "ok.png").read_bytes())
    (folder / "images" / "escape.png").symlink_to(folder.parent / "outside.png")
    rows: list[Any] = [
        vila("images/ok.png", "<image>\nWhat colour?", "red", id="a"),  # 0 clean
        '{"image": "images/ok.png", "conversations": [',  # 1
        vila("images/missing.png", "<image>\nq", "a", id="c"),  # 2
        vila("images/broken.jpg", "<image>\nq", "a", id="d"),  # 3
        vila("../../etc/passwd", "<image>\nq", "a", id="e"),  # 4
        vila("images/ok.png", "<image><image> two?", "a", id="f"),  # 5
        {"id": "g", "image": "images/ok.png", "conversations": []},  # 6
        {
            "id": "h",
            "image": "images/ok.png",
            "conversations": [  # 7
                {"from": "gpt", "value": "a"},
                {"from": "human", "value": "<image>q"},
            ],
        },
        {"id": "i", "conversations": [{"from": "bot", "value": "hi"}]},  # 8
        vila("images/ok.jpg", "<image>\nq", "a", id="a"),  # 9 dup of 0
        vila("images/ok.png", "<image>\n" + LONG, "a", id="k"),  # 10
        {
            "id": "l",
            "video": "videos/corrupt.mp4",
            "conversations": [  # 11
                {"from": "human", "value": "<video>\nq"},
                {"from": "gpt", "value": "a"},
            ],
        },
        {"id": "m", "text": "no conversation at all"},  # 12
        vila("images/escape.png", "<image>\nq", "a", id="n"),  # 13
        vila("images/ok.png", "<image>\nq", "", id="o"),  # 14
        {
            "id": "p",
            "video": "videos/none.mp4",
            "conversations": [  # 15
                {"from": "human", "value": "<video>\nq"},
                {"from": "gpt", "value": "a"},
            ],
        },
        {
            "id": "q",
            "messages": [  # 16
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]},
                {"role": "assistant", "content": "a"},
            ],
            "images": ["images/ok.jpg"],
        },
        {
            "id": "r",
            "video": "videos/ok.mp4",
            "conversations": [  # 17
                {"from": "human", "value": "<video>\nq"},
                {"from": "gpt", "value": "a"},
            ],
        },
    ]
    expected = {
        ("invalid_json", 1),
        ("missing_media", 2),
        ("unreadable_media", 3),
        ("media_escape", 4),
        ("tag_mismatch", 5),
        ("empty_turns", 6),
        ("misordered_turns", 7),
        ("unknown_role", 8),
        ("duplicate_id", 9),
        ("too_long", 10),
        ("unreadable_media", 11),
        ("invalid_sample", 12),
        ("media_escape", 13),
        ("empty_turns", 14),
        ("missing_media", 15),
    }
    return write_jsonl(folder / "data.jsonl", rows), expected


@pytest.fixture
def faulty(tmp_path: Path) -> tuple[Path, set[tuple[str, int]]]:
    return faulty_dataset(tmp_path / "ds")


class _Counter:
    """A stand-in token counter: one token per character (the real one is tested in
    test_encode.py against the tiny models)."""

    name = "chars"

    def count(self, queries: Any, max_length: int | None) -> list[Any]:
        from vlaunch_core.data.check import LengthCount

        out = []
        for q in queries:
            n = sum(len(t.text) for t in q.sample.turns) + 10 * len(q.image_sizes)
            out.append(LengthCount(n, 20))
        return out


def test_every_planted_fault_is_found_with_its_index(faulty: tuple[Path, set]) -> None:
    data, expected = faulty
    assert len({kind for kind, _ in expected}) >= 10
    report = check_sources(
        [CheckSource("faulty", data, data.parent)],
        CheckOptions(max_length=512, overlength="error"),
        _Counter(),
    )
    found = {(p.kind, p.index) for p in report.problems}
    assert found == expected, (found - expected, expected - found)
    assert all(p.file == str(data) for p in report.problems)
    assert not report.ok
    s = report.summary()
    assert s["samples"] == 18
    assert s["samples_with_errors"] == len({i for _, i in expected})
    assert s["videos"] == 3  # samples 11, 15, 17
    assert s["tokens"]["counted"] == 4  # samples 0, 10, 16, 17 (10 is counted, then flagged)


def test_decode_opens_every_file(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    (folder / "images").mkdir(parents=True)
    Image.effect_noise((64, 64), 50).convert("RGB").save(folder / "images" / "full.jpg")
    raw = (folder / "images" / "full.jpg").read_bytes()
    (folder / "images" / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    data = write_json(
        folder / "d.json",
        [vila("images/full.jpg", "<image>q", "a"), vila("images/cut.jpg", "<image>q", "a")],
    )
    src = [CheckSource("d", data, folder)]
    assert check_sources(src, CheckOptions()).ok  # headers are fine
    report = check_sources(src, CheckOptions(decode=True))
    assert [(p.kind, p.index) for p in report.problems] == [("unreadable_media", 1)]


def test_overlength_policy_decides_severity(faulty: tuple[Path, set]) -> None:
    data, _ = faulty
    src = [CheckSource("faulty", data, data.parent)]
    for policy, severity, field in (
        ("error", "error", None),
        ("drop", "warning", "would_drop"),
        ("truncate_text", "warning", "would_truncate"),
    ):
        report = check_sources(src, CheckOptions(max_length=512, overlength=policy), _Counter())
        long = [p for p in report.problems if p.kind == "too_long"]
        assert [(p.index, p.severity) for p in long] == [(10, severity)]
        if field:
            assert report.summary()[field] == 1


def test_clean_shapes_data_has_no_problems(shapes: Path) -> None:
    items = resolve_registry_mixture([str(_registry(shapes))], "img+kinds*2+video")
    from vlaunch_core.data.check import sources_from_mixture

    sources = sources_from_mixture(items)
    report = check_sources(sources, CheckOptions(decode=True))
    assert report.problems == []
    s = report.summary()
    assert s["samples"] == 24 + 30 + 8
    assert s["samples_in_mixture"] == 24 + 2 * 30 + 8
    assert s["videos"] == 8


def _registry(shapes: Path) -> Path:
    reg = shapes / "check-registry.yaml"
    reg.write_text(
        "img: {data_path: train.json}\n"
        "kinds: {data_path: kinds_train.jsonl, format: messages}\n"
        "video: {data_path: video_train.json, is_video: true}\n"
    )
    return reg


def test_json_report_shape(faulty: tuple[Path, set]) -> None:
    data, _ = faulty
    out = check_sources([CheckSource("faulty", data, data.parent)], CheckOptions()).to_json()
    json.dumps(out)
    assert set(out) == {"problems", "summary"}
    assert {"index", "kind", "file", "message"} <= set(out["problems"][0])
    assert out["summary"]["samples"] == 18


def test_missing_dataset_file(tmp_path: Path) -> None:
    report = check_sources([CheckSource("x", tmp_path / "nope.json", tmp_path)], CheckOptions())
    assert [(p.kind, p.index) for p in report.problems] == [("missing_file", -1)]


def test_percentile() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50, 90, 99)
    assert percentile([7], 99) == 7
