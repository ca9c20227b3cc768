"""Dataset formats: VILA/LLaVA `conversations` and OpenAI-style `messages`, as one `Sample`.

VILA/LLaVA (seed 000, lmms-finetune seed 003)::

    {"id": "1", "image": "images/1.jpg" | [...], "video": "v.mp4" | [...],
     "system_prompt": "...", "num_frames": 8,
     "conversations": [{"from": "human", "value": "<image>\\nWhat is it?"},
                       {"from": "gpt", "value": "A cat."}]}

`<image>` / `<video>` tags mark where each medium goes, in order. Without any tag, one tag
per medium is prepended to the first user turn (as VILA does).

OpenAI-style messages (seed 002; the column names are the dataset's `text_field` /
`image_field`)::

    {"messages": [{"role": "user", "content": [{"type": "text", "text": "Who is this?"},
                                               {"type": "image"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "Obama"}]}],
     "images": ["a.jpg"], "videos": ["b.mp4"]}

An image part may also name its file inline (`{"type": "image", "image": "a.jpg"}`).
`content` may be a plain string.

Column mapping: the conversation, image and video columns are the dataset entry's
`text_field`, `image_field` and `video_field` (defaults: `conversations`/`image`/`video` for
VILA samples, `messages`/`images`/`videos` for messages samples); the turn style of a mapped
column is recognised from its turns (`from`/`value` or `role`/`content`). A media cell is a
path, raw bytes, or a Hugging Face `Image`/`Video` cell (`{"bytes": ..., "path": ...}`);
bytes become `Embedded` media, read without touching the file system.

Parsing never raises on bad data: it returns the problems it found with the sample.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from vlaunch_core.data.jsonstream import iter_records
from vlaunch_core.data.problems import DataProblem

Role = Literal["system", "user", "assistant"]
PartType = Literal["text", "image", "video"]
Format = Literal["auto", "vila", "messages"]

IMAGE_TAG = "<image>"
VIDEO_TAG = "<video>"
_TAG_SPLIT = re.compile(r"(<image>|<video>)")

VILA_ROLES: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
MESSAGE_ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant", "system": "system"}
#: Default columns per turn style: (conversation, images, videos).
DEFAULT_FIELDS: dict[str, tuple[str, str, str]] = {
    "vila": ("conversations", "image", "video"),
    "messages": ("messages", "images", "videos"),
}


@dataclass(frozen=True, eq=False)
class Embedded:
    """An image or video stored in the dataset itself (a Parquet/Arrow cell, a tar member)."""

    data: bytes
    name: str = ""
    """Where it came from (a tar member, the original file name of an `Image` cell)."""

    def __str__(self) -> str:
        return f"embedded {self.name}" if self.name else f"embedded ({len(self.data)} bytes)"

    def __repr__(self) -> str:
        return f"Embedded({self.name!r}, {len(self.data)} bytes)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Embedded) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)


Media = str | Embedded
"""A media reference: a path (relative to the media root, or absolute) or embedded bytes."""


@dataclass(frozen=True)
class Part:
    """Text, or the place of the next image / video of the sample."""

    type: PartType
    text: str = ""


@dataclass(frozen=True)
class Turn:
    role: Role
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.parts if p.type == "text")

    def count(self, kind: PartType) -> int:
        return sum(1 for p in self.parts if p.type == kind)


@dataclass(frozen=True)
class Sample:
    """One conversation with its media, whatever the file format was.

    The k-th image part of the turns (in order) is `images[k]`; same for videos. Paths are as
    written in the file (relative to the dataset's media root, or absolute).
    """

    turns: tuple[Turn, ...]
    images: tuple[Media, ...] = ()
    videos: tuple[Media, ...] = ()
    id: str | None = None
    system_prompt: str | None = None
    num_frames: int | None = None
    source: str = ""
    index: int = -1

    def with_turns(self, turns: tuple[Turn, ...]) -> Sample:
        """The same sample cut to `turns` (a prefix), keeping only the media they show."""
        n_img = sum(t.count("image") for t in turns)
        n_vid = sum(t.count("video") for t in turns)
        return Sample(
            turns,
            self.images[:n_img],
            self.videos[:n_vid],
            self.id,
            self.system_prompt,
            self.num_frames,
            self.source,
            self.index,
        )

    def text_words(self) -> int:
        """Whitespace-separated words of all turns (LLaVA's cheap length proxy)."""
        return sum(len(t.text.split()) for t in self.turns)


@dataclass
class _Collect:
    file: str
    index: int
    problems: list[DataProblem] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        self.problems.append(DataProblem(kind, self.file, self.index, message))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ParsedRecord:
    """A record of a dataset file: its sample (None if unusable), problems and byte span."""

    index: int
    offset: int
    length: int
    sample: Sample | None
    problems: list[DataProblem]
    fatal: bool = False


@dataclass(frozen=True)
class Fields:
    """The columns of a dataset entry (None: the turn style's default)."""

    fmt: Format = "auto"
    text: str | None = None
    image: str | None = None
    video: str | None = None

    def columns(self, style: str) -> tuple[str, str, str]:
        """(conversation, images, videos) column names for one turn style."""
        text, image, video = DEFAULT_FIELDS[style]
        return (self.text or text, self.image or image, self.video or video)


def iter_samples(
    path: str,
    *,
    fmt: Format = "auto",
    text_field: str | None = None,
    image_field: str | None = None,
    video_field: str | None = None,
) -> Iterator[ParsedRecord]:
    """Stream every record of a dataset file (JSON array or JSON Lines) as a parsed sample."""
    fields = Fields(fmt, text_field, image_field, video_field)
    for rec in iter_records(path):
        if rec.error is not None:
            problem = DataProblem("invalid_json", path, rec.index, rec.error)
            if rec.fatal:
                problem = DataProblem(
                    "invalid_json",
                    path,
                    rec.index,
                    f"{rec.error}; the rest of the file cannot be read",
                )
            yield ParsedRecord(rec.index, rec.offset, rec.length, None, [problem], rec.fatal)
            continue
        sample, problems = parse_row(rec.value, fields, source=path, index=rec.index)
        yield ParsedRecord(rec.index, rec.offset, rec.length, sample, problems)


def parse_sample(
    value: Any,
    *,
    fmt: Format = "auto",
    text_field: str | None = None,
    image_field: str | None = None,
    video_field: str | None = None,
    source: str = "",
    index: int = -1,
) -> tuple[Sample | None, list[DataProblem]]:
    """One decoded record (a JSON object, a table row) as a `Sample`, with every problem."""
    return parse_row(
        value, Fields(fmt, text_field, image_field, video_field), source=source, index=index
    )


def parse_row(
    value: Any, fields: Fields, *, source: str = "", index: int = -1
) -> tuple[Sample | None, list[DataProblem]]:
    """`parse_sample` with the entry's columns as one `Fields`."""
    c = _Collect(source, index)
    if not isinstance(value, dict):
        c.add("invalid_sample", f"a sample is a JSON object, got {_json_type(value)}")
        return None, c.problems
    style = turn_style(value, fields)
    if style is None:
        if fields.text is not None:
            wanted = f"no '{fields.text}' column"
        elif fields.fmt == "auto":
            wanted = "no 'conversations' (VILA) or 'messages' (messages) key"
        else:
            wanted = f"no '{fields.columns(fields.fmt)[0]}' key"
        keys = ", ".join(sorted(map(str, value))[:8]) or "none"
        c.add("invalid_sample", f"{wanted}; keys: {keys}")
        return None, c.problems
    text, image, video = fields.columns(style)
    sample = (
        _parse_vila(value, c, text, image, video)
        if style == "vila"
        else _parse_messages(value, c, text, image, video)
    )
    if sample is not None and not any(p.kind == "unknown_role" for p in c.problems):
        _check_turns(sample, c)
    return sample, c.problems


def turn_style(value: dict[str, Any], fields: Fields) -> str | None:
    """`vila` or `messages`: the turn style of this record's conversation column (None: the
    record has no such column)."""
    if fields.fmt != "auto":
        return fields.fmt if fields.columns(fields.fmt)[0] in value else None
    if fields.text is not None:
        if fields.text not in value:
            return None
        shape = _turn_shape(value[fields.text])
        if shape is not None:
            return shape
        return "vila" if fields.text == "conversations" else "messages"
    if "conversations" in value:
        return "vila"
    if "messages" in value:
        return "messages"
    return None


def _turn_shape(turns: Any) -> str | None:
    """`vila` for `{"from", "value"}` turns, `messages` for `{"role", "content"}` turns."""
    if isinstance(turns, list):
        for t in turns:
            if isinstance(t, dict):
                if "from" in t and "value" in t:
                    return "vila"
                if "role" in t and "content" in t:
                    return "messages"
    return None


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


def suggest_fields(value: dict[str, Any], fields: Fields) -> dict[str, str]:
    """The entry keys (`text_field`, `image_field`, `video_field`) that would make a record
    without the expected conversation column parse, judged from what its columns hold; empty
    when no column holds turns."""
    text = next((str(k) for k, v in value.items() if _turn_shape(v) is not None), None)
    if text is None:
        return {}
    out = {"text_field": text}
    style = _turn_shape(value[text]) or "messages"
    _, image_column, video_column = fields.columns(style)
    kinds = {str(k): media_kind(v) for k, v in value.items() if k != text}
    for kind, column, key in (
        ("image", image_column, "image_field"),
        ("video", video_column, "video_field"),
    ):
        if column not in value:
            found = next((k for k, v in kinds.items() if v == kind), None)
            if found is not None:
                out[key] = found
    return out


def media_kind(cell: Any) -> str | None:
    """`image` or `video` when a cell (or every item of a list cell) looks like one."""
    items = cell if isinstance(cell, list) else [cell]
    found = {_item_kind(item) for item in items}
    return found.pop() if len(found) == 1 and items else None


def _item_kind(item: Any) -> str | None:
    media = media_item(item)
    if isinstance(media, str):
        lower = media.lower()
        return (
            "image"
            if lower.endswith(IMAGE_SUFFIXES)
            else ("video" if lower.endswith(VIDEO_SUFFIXES) else None)
        )
    if isinstance(media, Embedded):
        head = media.data[:16]
        if head.startswith((b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM")) or head[8:12] == b"WEBP":
            return "image"
        if head[4:8] == b"ftyp" or head.startswith(b"\x1a\x45\xdf\xa3"):
            return "video"
        lower = media.name.lower()
        return (
            "image"
            if lower.endswith(IMAGE_SUFFIXES)
            else ("video" if lower.endswith(VIDEO_SUFFIXES) else None)
        )
    return None


def _json_type(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        bytes: "bytes",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def media_item(item: Any) -> Media | None:
    """One media cell as a path or `Embedded` bytes; None if it is neither."""
    if isinstance(item, str):
        return item or None
    if isinstance(item, Embedded):
        return item
    if isinstance(item, bytes | bytearray | memoryview):
        return Embedded(bytes(item)) if len(item) else None
    if isinstance(item, dict):  # a Hugging Face Image/Video cell, or {"path": ...}
        data = item.get("bytes")
        path = item.get("path")
        if isinstance(data, bytes | bytearray) and data:
            return Embedded(bytes(data), path if isinstance(path, str) else "")
        if isinstance(path, str) and path:
            return path
    return None


def _paths(value: Any, key: str, c: _Collect) -> list[Media] | None:
    """A media column: one item or a list; an item is a path, bytes, or {"bytes", "path"}."""
    raw = value.get(key)
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    out: list[Media] = []
    for item in items:
        media = media_item(item)
        if media is None:
            c.add(
                "invalid_sample",
                f"'{key}' must be a path, bytes or a list of them, got {_json_type(item)}",
            )
            return None
        out.append(media)
    return out


def _common(value: dict[str, Any], c: _Collect) -> tuple[str | None, str | None, int | None]:
    sid = value.get("id")
    if sid is not None and (isinstance(sid, bool) or not isinstance(sid, str | int)):
        c.add("invalid_sample", f"'id' must be a string or a number, got {_json_type(sid)}")
        sid = None
    system = value.get("system_prompt")
    if system is not None and not isinstance(system, str):
        c.add("invalid_sample", f"'system_prompt' must be a string, got {_json_type(system)}")
        system = None
    frames = value.get("num_frames")
    if frames is not None and (
        not isinstance(frames, int) or isinstance(frames, bool) or frames < 1
    ):
        c.add("invalid_sample", f"'num_frames' must be a whole number >= 1, got {frames!r}")
        frames = None
    return (None if sid is None else str(sid)), system, frames


def _split_tags(text: str) -> list[Part]:
    parts: list[Part] = []
    for piece in _TAG_SPLIT.split(text):
        if piece == IMAGE_TAG:
            parts.append(Part("image"))
        elif piece == VIDEO_TAG:
            parts.append(Part("video"))
        elif piece.strip():
            parts.append(Part("text", piece.strip()))
    return parts


def _parse_vila(
    value: dict[str, Any], c: _Collect, text_field: str, image_field: str, video_field: str
) -> Sample | None:
    convs = value.get(text_field)
    if not isinstance(convs, list):
        c.add("invalid_sample", f"'{text_field}' must be a list, got {_json_type(convs)}")
        return None
    images = _paths(value, image_field, c)
    videos = _paths(value, video_field, c)
    sid, system, frames = _common(value, c)
    if images is None or videos is None:
        return None
    raw_turns: list[tuple[Role, str]] = []
    for i, turn in enumerate(convs):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            c.add("invalid_sample", f'turn {i} must be {{"from": ..., "value": "text"}}')
            return None
        who = turn.get("from")
        role = VILA_ROLES.get(str(who).lower()) if who is not None else None
        if role is None:
            c.add(
                "unknown_role", f"turn {i}: unknown role {who!r} (known: {', '.join(VILA_ROLES)})"
            )
            continue
        raw_turns.append((role, turn["value"]))
    n_img_tags = sum(text.count(IMAGE_TAG) for _, text in raw_turns)
    n_vid_tags = sum(text.count(VIDEO_TAG) for _, text in raw_turns)
    first_user = next((i for i, (role, _) in enumerate(raw_turns) if role == "user"), None)
    if first_user is None:
        pass  # no user turn: the turn checks report it; there is nowhere to put media
    elif (n_img_tags, n_vid_tags) == (0, 0):
        # VILA: without tags, the media go in front of the first user turn.
        role, text = raw_turns[first_user]
        prefix = (IMAGE_TAG + "\n") * len(images) + (VIDEO_TAG + "\n") * len(videos)
        raw_turns[first_user] = (role, prefix + text)
    else:
        _match_tags("image", n_img_tags, len(images), c)
        _match_tags("video", n_vid_tags, len(videos), c)
    turns = tuple(Turn(role, tuple(_split_tags(text))) for role, text in raw_turns)
    return Sample(turns, tuple(images), tuple(videos), sid, system, frames, c.file, c.index)


def _match_tags(kind: str, tags: int, media: int, c: _Collect) -> None:
    if tags != media:
        c.add(
            "tag_mismatch",
            f"{tags} <{kind}> tag{'s' if tags != 1 else ''} but "
            f"{media} {kind}{'s' if media != 1 else ''}",
        )


def _parse_messages(
    value: dict[str, Any], c: _Collect, text_field: str, image_field: str, video_field: str
) -> Sample | None:
    msgs = value.get(text_field)
    if not isinstance(msgs, list):
        c.add(
            "invalid_sample", f"'{text_field}' must be a list of messages, got {_json_type(msgs)}"
        )
        return None
    columns = {"image": _paths(value, image_field, c), "video": _paths(value, video_field, c)}
    sid, system, frames = _common(value, c)
    if columns["image"] is None or columns["video"] is None:
        return None
    media: dict[str, list[Media]] = {"image": [], "video": []}
    used = {"image": 0, "video": 0}
    turns: list[Turn] = []
    for i, msg in enumerate(msgs):
        if not isinstance(msg, dict) or "content" not in msg:
            c.add("invalid_sample", f'message {i} must be {{"role": ..., "content": ...}}')
            return None
        who = msg.get("role")
        role = MESSAGE_ROLES.get(str(who).lower()) if who is not None else None
        if role is None:
            c.add(
                "unknown_role",
                f"message {i}: unknown role {who!r} (known: {', '.join(MESSAGE_ROLES)})",
            )
            continue
        content = msg["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            c.add("invalid_sample", f"message {i}: 'content' must be a string or a list")
            return None
        parts: list[Part] = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                if part["text"].strip():
                    parts.append(Part("text", part["text"].strip()))
            elif kind in ("image", "video"):
                inline = media_item(part.get(kind) or part.get("path"))
                if inline is not None:
                    media[kind].append(inline)
                else:
                    column = columns[kind] or []
                    if used[kind] < len(column):
                        media[kind].append(column[used[kind]])
                    used[kind] += 1
                parts.append(Part(kind))
            else:
                c.add(
                    "invalid_sample",
                    f"message {i}: content parts are "
                    '{"type": "text", "text": ...}, {"type": "image"} or '
                    f'{{"type": "video"}}, got {part!r:.80}',
                )
                return None
        turns.append(Turn(role, tuple(parts)))
    for kind, field_name in (("image", image_field), ("video", video_field)):
        column = columns[kind] or []
        if used[kind] != len(column):
            c.add(
                "tag_mismatch",
                f"{used[kind]} {kind} part{'s' if used[kind] != 1 else ''} "
                f"without a path but {len(column)} in '{field_name}'",
            )
    return Sample(
        tuple(turns),
        tuple(media["image"]),
        tuple(media["video"]),
        sid,
        system,
        frames,
        c.file,
        c.index,
    )


def _check_turns(sample: Sample, c: _Collect) -> None:
    """Turn order: system turns first, then user/assistant alternating, ending on assistant."""
    turns = sample.turns
    if not turns:
        c.add("empty_turns", "the conversation has no turns")
        return
    for i, t in enumerate(turns):
        if not t.parts:
            c.add("empty_turns", f"turn {i} ({t.role}) is empty")
        elif t.role == "assistant" and not t.text:
            c.add("empty_turns", f"turn {i} (assistant) has no text to learn")
        if t.role != "user" and (t.count("image") or t.count("video")):
            c.add(
                "tag_mismatch",
                f"turn {i} ({t.role}) holds an image or video; media go in user turns",
            )
    roles = [t.role for t in turns]
    body = roles[next((i for i, r in enumerate(roles) if r != "system"), len(roles)) :]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(body))]
    if not body or body != expected or body[-1] != "assistant":
        shown = ", ".join(roles[:12]) + (", ..." if len(roles) > 12 else "")
        c.add(
            "misordered_turns",
            f"turn roles are [{shown}]: expected optional system turns, "
            "then user and assistant alternating, ending with an assistant turn",
        )
