"""Encoding with real (tiny) processors: labels token by token, overlength policies, lengths.

The tiny models use a byte-level tokenizer without merges, so a text tokenises piece by piece
exactly as it does whole: the expected ids and labels below are built from hand-written pieces
of the chat format, independently of the code under test. Besides the tiny models' own ChatML
template, labels are checked with the formats of released checkpoints put on the tiny
processors (`tests/data/templates.py`: Vicuna, Qwen's ChatML with a default system prompt,
Idefics3, Llama 3 headers, PaliGemma's prompt + newline), most of them without
`{% generation %}` marks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.data.templates import VICUNA
from tests.models.conftest import FAMILIES
from trainer.data.chat import ChatFormat
from trainer.data.encode import IGNORE_INDEX, SampleEncoder
from trainer.data.lengths import TokenCounter
from trainer.models.tiny.tokenizer import TURN_END, TURN_START
from vlaunch_core.data.check import LengthQuery
from vlaunch_core.data.formats import Sample, parse_sample
from vlaunch_core.errors import UserError

IMAGE = Image.new("RGB", (48, 40), (200, 30, 30))


def sample(record: dict[str, Any]) -> Sample:
    s, problems = parse_sample(record, source="d.json", index=4)
    assert s is not None and problems == []
    return s


TWO_TURNS = sample(
    {
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"},
            {"from": "gpt", "value": "red"},
            {"from": "human", "value": "And the shape?"},
            {"from": "gpt", "value": "a circle"},
        ],
    }
)


def expected(tokenizer: Any, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """Ids and labels from (text, is_answer) pieces, tokenised one by one."""
    ids: list[int] = []
    labels: list[int] = []
    for text, answer in pieces:
        part = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += part
        labels += part if answer else [IGNORE_INDEX] * len(part)
    return ids, labels


def encode(proc: Any, s: Sample, images: list[Any] | None = None, **kw: Any) -> Any:
    processor, family = proc
    enc = SampleEncoder(processor, family, max_length=kw.pop("max_length", 4096), **kw)
    return enc, enc.encode(s, [IMAGE] if images is None else images)


def image_tokens(processor: Any) -> int:
    """How many tokens the processor expands one `IMAGE` into (its own count)."""
    out = processor(text=[processor.image_token], images=[IMAGE], return_tensors="pt")
    return int((out["input_ids"][0] == processor.image_token_id).sum())


def test_tiny_chatml_labels_token_by_token(tiny_processor: Callable[[str], Any]) -> None:
    """The tiny models' own template: `<|im_start|>role\n...<|im_end|>\n` turns."""
    proc = tiny_processor("llava")
    processor = proc[0]
    _, e = encode(proc, TWO_TURNS)
    tok = processor.tokenizer
    image = processor.image_token * image_tokens(processor)
    ids, labels = expected(
        tok,
        [
            (
                f"{TURN_START}user\n{image}What colour is it?{TURN_END}\n{TURN_START}assistant\n",
                False,
            ),
            (f"red{TURN_END}", True),  # the end of turn is learnt
            (f"\n{TURN_START}user\nAnd the shape?{TURN_END}\n{TURN_START}assistant\n", False),
            (f"a circle{TURN_END}", True),
            ("\n", False),
        ],
    )
    assert e.tensors["input_ids"][0].tolist() == ids
    assert e.tensors["labels"][0].tolist() == labels
    pixels = processor.image_processor(IMAGE, return_tensors="pt")["pixel_values"]
    assert e.tensors["pixel_values"].shape == pixels.shape


def test_vicuna_labels_token_by_token(styled_processor: Callable[..., Any]) -> None:
    """LLaVA-1.5's format, whose tokenizer (Llama 2's) writes BOS itself."""
    proc = styled_processor("llava", "vicuna")
    processor = proc[0]
    _, e = encode(proc, TWO_TURNS)
    tok = processor.tokenizer
    image = processor.image_token * image_tokens(processor)
    ids, labels = expected(
        tok,
        [
            (VICUNA.bos, False),
            ("USER: " + image + "\nWhat colour is it? ASSISTANT:", False),
            # the space after "ASSISTANT:" and the end of turn are learnt
            (" red" + VICUNA.eos, True),
            (" USER: And the shape? ASSISTANT:", False),
            (" a circle" + VICUNA.eos, True),
            (" ", False),
        ],
    )
    assert e.tensors["input_ids"][0].tolist() == ids
    assert e.tensors["labels"][0].tolist() == labels


def test_qwen2_vl_labels_token_by_token(styled_processor: Callable[..., Any]) -> None:
    """Qwen2-VL's ChatML: a default system prompt, the image between vision markers."""
    proc = styled_processor("qwen2_vl", "qwen")
    processor = proc[0]
    _, e = encode(proc, TWO_TURNS)
    tok = processor.tokenizer
    t, h, w = e.tensors["image_grid_thw"][0].tolist()
    n_image = t * h * w // processor.image_processor.merge_size**2
    ids, labels = expected(
        tok,
        [
            (
                "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|>" + processor.image_token * n_image + "<|vision_end|>"
                "What colour is it?<|im_end|>\n<|im_start|>assistant\n",
                False,
            ),
            ("red<|im_end|>", True),
            ("\n<|im_start|>user\nAnd the shape?<|im_end|>\n<|im_start|>assistant\n", False),
            ("a circle<|im_end|>", True),
            ("\n", False),
        ],
    )
    assert e.tensors["input_ids"][0].tolist() == ids
    assert e.tensors["labels"][0].tolist() == labels


_TINY = (f"{TURN_START}assistant\n", [f"red{TURN_END}", f"a circle{TURN_END}"], "\n")
_ANSWER_CASES = [
    (
        "idefics3",
        "idefics3",
        "Assistant:",
        [" red<end_of_utterance>", " a circle<end_of_utterance>"],
        "\n",
    ),
    (
        "mllama",
        "llama3",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ["red<|eot_id|>", "a circle<|eot_id|>"],
        "<|start_header_id|>",
    ),
    ("llava_next", "vicuna", " ASSISTANT:", [" red</s>", " a circle</s>"], " "),
    ("paligemma", "paligemma", "?\n", ["red<eos>", "a circle<eos>"], ""),
    *((family, None, *_TINY) for family in FAMILIES),
]


@pytest.mark.parametrize(
    ("family", "style", "before", "answers", "after"),
    _ANSWER_CASES,
    ids=[f"{case[0]}-{case[1] or 'tiny'}" for case in _ANSWER_CASES],
)
def test_labels_cover_exactly_the_answers(
    styled_processor: Callable[..., Any],
    family: str,
    style: str | None,
    before: str,
    answers: list[str],
    after: str,
) -> None:
    proc = styled_processor(family, style)
    _, e = encode(proc, TWO_TURNS)
    tok = proc[0].tokenizer
    ids = e.tensors["input_ids"][0].tolist()
    labels = e.tensors["labels"][0].tolist()
    runs: list[tuple[int, int]] = []
    for i, lab in enumerate(labels):
        if lab != IGNORE_INDEX:
            assert lab == ids[i]
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
    assert [tok.decode(ids[a:b]) for a, b in runs] == answers
    head = tok(before, add_special_tokens=False)["input_ids"]
    tail = tok(after, add_special_tokens=False)["input_ids"]
    for a, b in runs:
        assert ids[a - len(head) : a] == head
        assert ids[b : b + len(tail)] == tail or b == len(ids)
    if family == "paligemma":  # prefix-LM: the answer part is the causal "suffix"
        tt = e.tensors["token_type_ids"][0].tolist()
        assert tt == [0] * runs[0][0] + [1] * (len(ids) - runs[0][0])


@pytest.mark.parametrize(
    ("family", "style"),
    [
        ("llava", None),
        ("qwen2_vl", None),
        ("idefics3", None),
        ("mllama", None),
        ("llava", "vicuna"),
    ],
)
def test_labels_agree_with_the_templates_generation_marks(
    styled_processor: Callable[..., Any], family: str, style: str | None
) -> None:
    """Where a template marks the answers (`{% generation %}`), transformers' own assistant
    mask picks out the same tokens as the labels (found without the marks)."""
    processor, description = styled_processor(family, style)
    assert "{% generation %}" in processor.chat_template
    text_only = TWO_TURNS.with_turns(
        [t.__class__(t.role, [p for p in t.parts if p.type == "text"]) for t in TWO_TURNS.turns]
    )
    e = SampleEncoder(processor, description, max_length=4096).encode(text_only, [])
    assert e is not None
    tok = processor.tokenizer
    marked = tok.apply_chat_template(
        ChatFormat(processor).messages(text_only),
        chat_template=processor.chat_template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    masked = [i for i, m in zip(marked["input_ids"], marked["assistant_masks"], strict=True) if m]
    labels = e.tensors["labels"][0]
    assert labels[labels != IGNORE_INDEX].tolist() == masked


@pytest.mark.parametrize("style", [None, "qwen"])
def test_system_prompts(styled_processor: Callable[..., Any], style: str | None) -> None:
    """A sample's system prompt, else the default one, replaces the template's own."""
    proc = styled_processor("qwen2_vl", style)
    tok = proc[0].tokenizer
    s = sample(
        {
            "image": "a.png",
            "system_prompt": "Be brief.",
            "conversations": [
                {"from": "human", "value": "<image>q"},
                {"from": "gpt", "value": "a"},
            ],
        }
    )
    _, e = encode(proc, s, system_prompt="Default.")
    text = tok.decode(e.tensors["input_ids"][0])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    _, e = encode(proc, TWO_TURNS, system_prompt="Default.")
    assert tok.decode(e.tensors["input_ids"][0]).startswith("<|im_start|>system\nDefault.")


def test_single_image_family_leaves_extra_images_out(tiny_processor: Callable[[str], Any]) -> None:
    proc = tiny_processor("llava")
    s = sample(
        {
            "image": ["a.png", "b.png"],
            "conversations": [
                {"from": "human", "value": "<image> and <image>: same?"},
                {"from": "gpt", "value": "no"},
            ],
        }
    )
    enc, e = encode(proc, s, [IMAGE, IMAGE])
    assert e.tensors["pixel_values"].shape[0] == 1
    image_id = proc[0].image_token_id
    assert e.tensors["input_ids"][0].tolist().count(image_id) == image_tokens(proc[0])
    assert enc.stats.images_left_out == 1


def test_qwen_video_goes_through_its_video_processor(tiny_processor: Callable[[str], Any]) -> None:
    """8 sampled frames are one video of 4 temporal patches (temporal_patch_size 2), not 8
    images: `pixel_values_videos` and `video_grid_thw` from Qwen2-VL's own video processor."""
    processor, family = tiny_processor("qwen2_vl")
    s = sample(
        {
            "video": "v.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nWhich way?"},
                {"from": "gpt", "value": "left"},
            ],
        }
    )
    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    e = SampleEncoder(processor, family, max_length=4096).encode(s, [], [frames])
    assert e is not None
    assert "pixel_values" not in e.tensors and "image_grid_thw" not in e.tensors
    (t, h, w) = e.tensors["video_grid_thw"][0].tolist()
    temporal = processor.video_processor.temporal_patch_size
    merge = processor.video_processor.merge_size
    assert t == 8 // temporal == 4
    ids = e.tensors["input_ids"][0].tolist()
    video_tokens = ids.count(processor.video_token_id)
    assert video_tokens == t * h * w // merge**2
    # The same frames as 8 images would take twice the tokens (one temporal patch each).
    eight = ChatFormat(processor).render([{"role": "user", "content": [{"type": "image"}] * 8}])
    as_images = processor(
        text=[eight],
        images=[Image.fromarray(f) for f in frames],
        return_tensors="pt",
    )
    assert int(as_images["image_grid_thw"].prod(dim=1).sum()) // merge**2 == 2 * video_tokens


def test_llava_next_video_goes_through_its_video_processor(
    tiny_processor: Callable[[str], Any],
) -> None:
    processor, family = tiny_processor("llava_next_video")
    s = sample(
        {
            "video": "v.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nWhich way?"},
                {"from": "gpt", "value": "left"},
            ],
        }
    )
    frames = np.zeros((6, 40, 48, 3), dtype=np.uint8)
    e = SampleEncoder(processor, family, max_length=4096).encode(s, [], [frames])
    assert e is not None
    assert tuple(e.tensors["pixel_values_videos"].shape[:2]) == (1, 6)
    assert "pixel_values" not in e.tensors
    labels = e.tensors["labels"][0]
    answer = processor.tokenizer.decode(labels[labels != -100])
    assert answer.strip().startswith("left")


THREE_TURNS = sample(
    {
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nColour?"},
            {"from": "gpt", "value": "red"},
            {"from": "human", "value": "Shape?"},
            {"from": "gpt", "value": "circle"},
            {"from": "human", "value": "Size?"},
            {"from": "gpt", "value": "small " * 20},
        ],
    }
)


def test_truncate_cuts_whole_trailing_turns(tiny_processor: Callable[[str], Any]) -> None:
    proc = tiny_processor("llava")
    _, full = encode(proc, THREE_TURNS)
    _, two = encode(proc, THREE_TURNS.with_turns(THREE_TURNS.turns[:4]))
    enc, cut = encode(proc, THREE_TURNS, max_length=two.length + 5)
    assert full.length > two.length + 5
    assert cut.overlength == "truncated_turns"
    assert cut.tensors["input_ids"].tolist() == two.tensors["input_ids"].tolist()
    assert cut.tensors["labels"].tolist() == two.tensors["labels"].tolist()
    assert enc.stats.truncated_turns == 1 and enc.stats.dropped == 0


def test_truncate_cuts_answer_text_but_never_media(tiny_processor: Callable[[str], Any]) -> None:
    proc = tiny_processor("llava")
    image_id = proc[0].image_token_id
    s = sample(
        {
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe."},
                {"from": "gpt", "value": "x" * 300},
            ],
        }
    )
    _, full = encode(proc, s)
    limit = full.answer_start + 10
    enc, cut = encode(proc, s, max_length=limit)
    assert cut.overlength == "truncated_text" and cut.length == limit
    assert cut.tensors["input_ids"][0].tolist().count(image_id) == image_tokens(proc[0])
    assert int((cut.tensors["labels"] != IGNORE_INDEX).sum()) == 10
    assert enc.stats.truncated_text == 1
    # Under the media tokens nothing can be kept: dropped.
    enc, none = encode(proc, s, max_length=full.media_end - 1)
    assert none is None and enc.stats.dropped == 1


def test_truncate_removes_the_media_of_cut_turns(tiny_processor: Callable[[str], Any]) -> None:
    proc = tiny_processor("qwen2_vl")
    s = sample(
        {
            "image": ["a.png", "b.png"],
            "conversations": [
                {"from": "human", "value": "<image>\nColour?"},
                {"from": "gpt", "value": "red"},
                {"from": "human", "value": "<image>\nAnd this one?"},
                {"from": "gpt", "value": "blue"},
            ],
        }
    )
    _, first = encode(proc, s.with_turns(s.turns[:2]), [IMAGE])
    _, cut = encode(proc, s, [IMAGE, IMAGE], max_length=first.length + 3)
    assert cut.overlength == "truncated_turns"
    assert cut.tensors["image_grid_thw"].shape[0] == 1
    assert cut.tensors["input_ids"].tolist() == first.tensors["input_ids"].tolist()


def test_drop_and_error_policies(tiny_processor: Callable[[str], Any]) -> None:
    proc = tiny_processor("llava")
    enc, e = encode(proc, THREE_TURNS, max_length=40, overlength="drop")
    assert e is None and enc.stats.dropped == 1
    with pytest.raises(UserError, match=r"d\.json sample 4: \d+ tokens > data.max_length=40"):
        encode(proc, THREE_TURNS, max_length=40, overlength="error")


@pytest.mark.parametrize("style", [None, "vicuna"])
def test_prompt_for_generation(styled_processor: Callable[..., Any], style: str | None) -> None:
    """Everything before the last answer, up to and with the generation prompt."""
    proc = styled_processor("llava", style)
    processor = proc[0]
    enc = SampleEncoder(processor, proc[1], max_length=4096)
    inputs, answer = enc.encode_prompt(TWO_TURNS, [IMAGE])
    assert answer == "a circle"
    image = processor.image_token * image_tokens(processor)
    if style is None:
        prompt = (
            f"{TURN_START}user\n{image}What colour is it?{TURN_END}\n{TURN_START}assistant\n"
            f"red{TURN_END}\n{TURN_START}user\nAnd the shape?{TURN_END}\n{TURN_START}assistant\n"
        )
    else:
        prompt = (
            f"{VICUNA.bos}USER: {image}\nWhat colour is it? ASSISTANT: red{VICUNA.eos}"
            " USER: And the shape? ASSISTANT:"
        )
    ids, _ = expected(processor.tokenizer, [(prompt, False)])
    assert inputs["input_ids"][0].tolist() == ids
    assert "labels" not in inputs


@pytest.mark.parametrize(
    ("family", "style"),
    [
        ("llava", "vicuna"),
        ("qwen2_vl", "qwen"),
        ("idefics3", "idefics3"),
        ("mllama", "llama3"),
        ("llava_next", "vicuna"),
        ("llava", None),
        ("qwen2_vl", None),
    ],
)
def test_token_counter_matches_the_encoder(
    styled_processor: Callable[..., Any], family: str, style: str | None
) -> None:
    processor, fam = styled_processor(family, style)
    max_images = None if fam.supports_multi_image else 1
    counter = TokenCounter(processor, family, max_images=max_images)
    enc = SampleEncoder(processor, fam, max_length=100_000)
    sizes = [(48, 40), (20, 64), (90, 30)]
    samples = [
        THREE_TURNS,
        TWO_TURNS,
        sample(
            {
                "image": "a.png",
                "conversations": [
                    {"from": "human", "value": "<image>q"},
                    {"from": "gpt", "value": "a"},
                ],
            }
        ),
    ]
    queries = [LengthQuery(s, [size], []) for s, size in zip(samples, sizes, strict=True)]
    counts = counter.count(queries, max_length=None)
    for s, size, n in zip(samples, sizes, counts, strict=True):
        e = enc.encode(s, [Image.new("RGB", size)])
        assert e is not None
        assert n.tokens == e.length, (family, size)
    # `shortest` (what truncation must keep) is the first exchange up to its first answer token.
    first = enc.encode(THREE_TURNS.with_turns(THREE_TURNS.turns[:2]), [Image.new("RGB", sizes[0])])
    assert first is not None
    (n,) = counter.count(queries[:1], max_length=10)
    assert n.shortest == first.answer_start + 1


@pytest.mark.parametrize(
    ("family", "style"),
    [("llava", "vicuna"), ("qwen2_vl", "qwen"), ("idefics3", "idefics3"), ("llava", None)],
)
def test_cached_rendering_equals_rendering(
    styled_processor: Callable[..., Any], family: str, style: str | None
) -> None:
    chat = ChatFormat(styled_processor(family, style)[0])
    for i in range(70):  # one shape, many texts: cached after the first, re-verified at 64
        s = sample(
            {
                "image": "a.png",
                "conversations": [
                    {"from": "human", "value": f"<image>\nquestion {i} {'x' * i}"},
                    {"from": "gpt", "value": f"answer {i}"},
                ],
            }
        )
        msgs = chat.messages(s)
        assert chat.render_cached(msgs) == chat.render(msgs)
        assert chat.render_cached(msgs, True) == chat.render(msgs, True)
