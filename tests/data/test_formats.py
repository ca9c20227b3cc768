"""Dataset formats: VILA/LLaVA and OpenAI messages, JSON arrays and JSON Lines, streaming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.helpers import vila, write_json, write_jsonl
from vlaunch_core.data import jsonstream
from vlaunch_core.data.formats import Part, iter_samples, parse_sample
from vlaunch_core.data.jsonstream import iter_records, read_record


def kinds(problems: list) -> list[str]:
    return [p.kind for p in problems]


def test_vila_single_image_with_tag() -> None:
    s, problems = parse_sample(
        vila("images/1.jpg", "<image>\nWhat is it?", "A cat.", id=7), source="d.json", index=3
    )
    assert problems == []
    assert s is not None
    assert (s.id, s.source, s.index, s.images) == ("7", "d.json", 3, ("images/1.jpg",))
    assert [t.role for t in s.turns] == ["user", "assistant"]
    assert s.turns[0].parts == (Part("image"), Part("text", "What is it?"))
    assert s.turns[1].parts == (Part("text", "A cat."),)


def test_vila_missing_tags_are_prepended_like_vila() -> None:
    s, problems = parse_sample(vila(["a.png", "b.png"], "Compare them.", "Same."))
    assert problems == []
    assert s is not None
    assert s.turns[0].parts == (Part("image"), Part("image"), Part("text", "Compare them."))


def test_vila_video_system_prompt_and_num_frames() -> None:
    record = {
        "system_prompt": "You are a helpful assistant.",
        "video": "v/1.mp4",
        "num_frames": 10,
        "conversations": [
            {"from": "human", "value": "<video>\nWhat happens?"},
            {"from": "gpt", "value": "A baby cries."},
        ],
    }
    s, problems = parse_sample(record)
    assert problems == []
    assert s is not None
    assert (s.videos, s.num_frames, s.system_prompt) == (
        ("v/1.mp4",),
        10,
        "You are a helpful assistant.",
    )
    assert s.turns[0].parts[0] == Part("video")


def test_vila_system_turn_and_multi_turn() -> None:
    record = {
        "image": "a.png",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "<image>\nColour?"},
            {"from": "gpt", "value": "red"},
            {"from": "human", "value": "Shape?"},
            {"from": "gpt", "value": "circle"},
        ],
    }
    s, problems = parse_sample(record)
    assert problems == []
    assert s is not None
    assert [t.role for t in s.turns] == ["system", "user", "assistant", "user", "assistant"]


@pytest.mark.parametrize(
    ("record", "kind", "needle"),
    [
        (
            vila(["a.png"], "<image><image> two?", "no"),
            "tag_mismatch",
            "2 <image> tags but 1 image",
        ),
        (vila(None, "<image> where?", "nowhere"), "tag_mismatch", "1 <image> tag but 0 images"),
        (vila("a.png", "<image>x", "y", num_frames=0), "invalid_sample", "num_frames"),
        ({"conversations": []}, "empty_turns", "no turns"),
        (vila("a.png", "<image>q", ""), "empty_turns", "turn 1 (assistant) is empty"),
        (
            {
                "image": "a.png",
                "conversations": [
                    {"from": "gpt", "value": "a"},
                    {"from": "human", "value": "<image>q"},
                ],
            },
            "misordered_turns",
            "alternating",
        ),
        (vila("a.png", "<image>q", "a", "dangling question"), "misordered_turns", "ending"),
        ({"conversations": [{"from": "bot", "value": "hi"}]}, "unknown_role", "'bot'"),
        ({"text": "no conversations"}, "invalid_sample", "no 'conversations'"),
        (["not", "an", "object"], "invalid_sample", "JSON object"),
        ({"conversations": "nope"}, "invalid_sample", "must be a list"),
        ({"image": 3, "conversations": []}, "invalid_sample", "'image' must be a path"),
        (
            {
                "conversations": [
                    {"from": "human", "value": "q"},
                    {"from": "gpt", "value": "<image> a"},
                ],
                "image": "a.png",
            },
            "tag_mismatch",
            "media go in user turns",
        ),
    ],
)
def test_vila_problems(record: object, kind: str, needle: str) -> None:
    _, problems = parse_sample(record, source="f.json", index=5)
    assert kind in kinds(problems), problems
    found = [p for p in problems if p.kind == kind]
    assert any(needle in p.message for p in found), found
    assert all((p.file, p.index) == ("f.json", 5) for p in problems)


def test_messages_format_with_configurable_fields() -> None:
    record = {
        "conv": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Who is this?"}, {"type": "image"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Barack Obama"}]},
            {"role": "user", "content": "What is he famous for?"},
            {"role": "assistant", "content": [{"type": "text", "text": "President."}]},
        ],
        "pics": ["obama.jpg"],
    }
    s, problems = parse_sample(record, text_field="conv", image_field="pics")
    assert problems == []
    assert s is not None
    assert s.images == ("obama.jpg",)
    assert s.turns[0].parts == (Part("text", "Who is this?"), Part("image"))
    assert s.turns[2].parts == (Part("text", "What is he famous for?"),)
    # With the default field names the same record is not recognised.
    _, problems = parse_sample(record)
    assert kinds(problems) == ["invalid_sample"]


def test_messages_inline_paths_single_image_and_videos() -> None:
    record = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "inline.png"},
                    {"type": "image"},
                    {"type": "video"},
                    {"type": "text", "text": "q"},
                ],
            },
            {"role": "assistant", "content": "a"},
        ],
        "images": "col.png",
        "videos": ["v.mp4"],
    }
    s, problems = parse_sample(record)
    assert problems == []
    assert s is not None
    assert (s.images, s.videos) == (("inline.png", "col.png"), ("v.mp4",))


def test_messages_count_mismatch_and_bad_parts() -> None:
    record = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}]},
            {"role": "assistant", "content": "a"},
        ],
        "images": ["a.png", "b.png"],
    }
    _, problems = parse_sample(record)
    assert kinds(problems) == ["tag_mismatch"]
    assert "1 image part without a path but 2 in 'images'" in problems[0].message
    bad = {"messages": [{"role": "user", "content": [{"type": "audio"}]}]}
    _, problems = parse_sample(bad)
    assert kinds(problems) == ["invalid_sample"]
    unknown = {"messages": [{"role": "human", "content": "q"}]}
    _, problems = parse_sample(unknown)
    assert kinds(problems) == ["unknown_role"]


def test_json_array_and_jsonl_give_the_same_samples(tmp_path: Path) -> None:
    rows = [vila("a.png", f"<image>\nq{i} é ✓", f"a{i}", id=i) for i in range(50)]
    arr = write_json(tmp_path / "d.json", rows)
    lines = write_jsonl(tmp_path / "d.jsonl", rows)
    a = [r.sample for r in iter_samples(str(arr))]
    b = [r.sample for r in iter_samples(str(lines))]
    assert [s.turns for s in a] == [s.turns for s in b]  # type: ignore[union-attr]
    assert [s.index for s in a] == list(range(50))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        '\ufeff[\r\n  {"a": 1},\r\n  {"b": "é\u00e9"}  ,{"c": [1, 2.5e3, null, true]}\r\n]\r\n',
        '[{"a": 1}, 123456789, "x"]',
        "  [ ]  ",
    ],
)
def test_array_records_read_back_from_byte_spans(
    tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(text.encode("utf-8"))
    expected = json.loads(text.lstrip("\ufeff"))
    for chunk in (3, 7, 1 << 20):  # elements and numbers split across chunk ends
        monkeypatch.setattr(jsonstream, "CHUNK_CHARS", chunk)
        records = list(iter_records(path))
        assert [r.value for r in records] == expected
        assert all(read_record(path, r.offset, r.length) == r.value for r in records)


def test_invalid_json_line_is_reported_and_reading_goes_on(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"a": 1}, "{not json", "", {"b": 2}])
    records = list(iter_records(path))
    assert [(r.index, r.error is None) for r in records] == [(0, True), (1, False), (2, True)]
    assert "line 2" in records[1].error  # type: ignore[operator]
    assert records[2].value == {"b": 2}


def test_invalid_array_element_stops_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[{"a": 1}, {"b": oops}, {"c": 3}]')
    records = list(iter_samples(str(path)))
    assert records[-1].fatal and records[-1].index == 1
    assert records[-1].problems[0].kind == "invalid_json"
    assert "rest of the file" in records[-1].problems[0].message


def _bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
@pytest.mark.parametrize("layout", ["lines", "array"])
def test_large_file_streams(tmp_path: Path, layout: str) -> None:
    """The first sample of a 64 MB file comes back after reading a tiny part of it."""
    row = json.dumps(vila("images/1.jpg", "<image>\n" + "why " * 60, "because " * 60))
    n = (64 << 20) // len(row) + 1
    path = tmp_path / ("big.jsonl" if layout == "lines" else "big.json")
    with open(path, "w") as f:
        if layout == "array":
            f.write("[\n" + ",\n".join([row] * n) + "\n]\n")
        else:
            f.write((row + "\n") * n)
    size = path.stat().st_size
    before = _bytes_read()
    first = next(iter(iter_samples(str(path))))
    read = _bytes_read() - before
    assert first.sample is not None and first.index == 0
    assert size > 60 << 20
    assert read < 4 << 20, f"read {read} bytes of {size} to get the first sample"


def test_a_pretty_printed_object_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": [vila("a.png", "<image>q", "a")]}, indent=2))
    (record,) = list(iter_samples(str(path)))
    assert record.fatal and "one JSON object spread over lines" in record.problems[0].message
