"""The synthetic shapes dataset used by the demo and the tests (`vlaunch data synth DIR`).

Every question needs the image to be answered, and answers are one word so that exact-match
accuracy is meaningful; `meta.json` states the chance level of each question kind.

Files written under DIR:

- `train.json`, `eval.json`: VILA JSON arrays, "What colour is the shape?" (the demo).
- `kinds_train.jsonl`, `kinds_eval.jsonl`: OpenAI messages, JSON Lines; colour, shape, count
  and position questions, some as two-question conversations.
- `video_train.json`, `video_eval.json`: VILA JSON arrays with `video`, "Which way does the
  shape move?".
- `images/*.png`, `images/*.jpg`, `videos/*.mp4`: the media.
- `meta.json`: counts, answers and the chance level of each question kind.

With `formats` (`vlaunch data synth --formats json,parquet,webdataset`), the same records
also as:

- `parquet/<name>.parquet` (e.g. `parquet/train.parquet`): one Parquet file per dataset
  file, row groups of `PARQUET_ROW_GROUP` rows, media embedded as Hugging Face `Image` cells
  (`{"bytes": ..., "path": ...}`), the conversation columns as in the JSON file.
- `shards/<name>-{0000..NNNN}.tar` with a wids index `shards/<name>.wids.json`: WebDataset
  shards of `TAR_SHARD_SAMPLES` samples, each sample `<key>.json` (the record, naming its
  image by extension: `"image": "png"`) and `<key>.png` / `.jpg` / `.mp4`.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlaunch_core.errors import UserError

logger = logging.getLogger(__name__)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (30, 70, 230),
    "yellow": (235, 215, 30),
    "purple": (150, 40, 190),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("left", "right", "top", "bottom")
DIRECTIONS = ("left", "right", "up", "down")
COUNTS = ("1", "2", "3", "4")

QUESTIONS: dict[str, str] = {
    "colour": "What colour is the shape? Answer with one word.",
    "shape": "What shape is it? Answer with one word.",
    "count": "How many shapes are there? Answer with a number.",
    "position": "Where is the shape: left, right, top or bottom?",
    "direction": "Which way does the shape move: left, right, up or down?",
}
ANSWERS: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "count": COUNTS,
    "position": POSITIONS,
    "direction": DIRECTIONS,
}

FORMATS = ("json", "parquet", "webdataset")
PARQUET_ROW_GROUP = 64
TAR_SHARD_SAMPLES = 64

IMAGE_SIZE = 48
VIDEO_SIZE = 32
VIDEO_FRAMES = 8
VIDEO_FPS = 8


@dataclass(frozen=True)
class SynthSizes:
    train: int = 800
    """Training images (colour questions; the kinds files reuse them plus count scenes)."""
    eval: int = 200
    """Held-out images."""
    video_train: int = 64
    video_eval: int = 24


def _background(rng: random.Random) -> tuple[int, int, int]:
    g = rng.randint(90, 150)
    return (g, g, g)


def _draw(draw: Any, shape: str, box: tuple[int, int, int, int], fill: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _one_shape_image(rng: random.Random) -> tuple[Any, dict[str, str]]:
    from PIL import Image, ImageDraw

    colour, shape, where = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(POSITIONS)
    im = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), _background(rng))
    side = rng.randint(12, 18)
    half = IMAGE_SIZE // 2
    centre = {
        "left": (10, half),
        "right": (IMAGE_SIZE - 10, half),
        "top": (half, 10),
        "bottom": (half, IMAGE_SIZE - 10),
    }[where]
    cx = centre[0] + rng.randint(-2, 2)
    cy = centre[1] + rng.randint(-2, 2)
    box = (cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)
    _draw(ImageDraw.Draw(im), shape, box, COLOURS[colour])
    return im, {"colour": colour, "shape": shape, "position": where}


def _count_image(rng: random.Random) -> tuple[Any, dict[str, str]]:
    from PIL import Image, ImageDraw

    n = int(rng.choice(COUNTS))
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    im = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), _background(rng))
    draw = ImageDraw.Draw(im)
    cells = rng.sample(range(4), n)  # one shape per quadrant: never overlapping
    for cell in cells:
        ox, oy = (cell % 2) * IMAGE_SIZE // 2, (cell // 2) * IMAGE_SIZE // 2
        side = rng.randint(9, 14)
        x0, y0 = ox + rng.randint(2, 22 - side), oy + rng.randint(2, 22 - side)
        _draw(draw, shape, (x0, y0, x0 + side, y0 + side), COLOURS[colour])
    return im, {"colour": colour, "shape": shape, "count": str(n)}


def _save_image(im: Any, folder: Path, stem: str, index: int) -> str:
    ext = "png" if index % 2 == 0 else "jpg"
    name = f"images/{stem}.{ext}"
    im.save(folder / name, quality=95) if ext == "jpg" else im.save(folder / name)
    return name


def write_video(
    path: Path,
    direction: str,
    colour: tuple[int, int, int],
    shape: str,
    background: tuple[int, int, int],
    frames: int = VIDEO_FRAMES,
    size: int = VIDEO_SIZE,
    fps: int = VIDEO_FPS,
) -> None:
    """An mp4 (H.264 when available) of one shape moving across the frame."""
    import av
    import numpy as np
    from PIL import Image, ImageDraw

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as out:
        stream: Any = out.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "ultrafast", "g": str(frames)}
        side = size // 3
        travel = size - side - 4
        for i in range(frames):
            step = 2 + round(travel * i / max(1, frames - 1))
            back = size - side - step
            x, y = {
                "right": (step, (size - side) // 2),
                "left": (back, (size - side) // 2),
                "down": ((size - side) // 2, step),
                "up": ((size - side) // 2, back),
            }[direction]
            im = Image.new("RGB", (size, size), background)
            _draw(ImageDraw.Draw(im), shape, (x, y, x + side, y + side), colour)
            frame = av.VideoFrame.from_ndarray(np.asarray(im), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _vila(sid: str, media_key: str, media: str, turns: list[tuple[str, str]]) -> dict[str, Any]:
    convs = []
    for i, (q, a) in enumerate(turns):
        tag = f"<{media_key}>\n" if i == 0 else ""
        convs += [{"from": "human", "value": tag + q}, {"from": "gpt", "value": a}]
    return {"id": sid, media_key: media, "conversations": convs}


def _messages(sid: str, image: str, turns: list[tuple[str, str]]) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = []
    for i, (q, a) in enumerate(turns):
        content: list[dict[str, Any]] = [{"type": "image"}] if i == 0 else []
        content.append({"type": "text", "text": q})
        msgs += [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": a}]},
        ]
    return {"id": sid, "messages": msgs, "images": [image]}


def _write_json(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _image_split(folder: Path, split: str, n: int, rng: random.Random) -> dict[str, list[Any]]:
    vila: list[dict[str, Any]] = []
    kinds: list[dict[str, Any]] = []
    for i in range(n):
        im, facts = _one_shape_image(rng)
        name = _save_image(im, folder, f"{split}_{i:06d}", i)
        sid = f"{split}-{i}"
        vila.append(_vila(sid, "image", name, [(QUESTIONS["colour"], facts["colour"])]))
        kind = ("colour", "shape", "position")[i % 3]
        turns = [(QUESTIONS[kind], facts[kind])]
        if i % 5 == 0:  # some two-question conversations
            other = "shape" if kind != "shape" else "colour"
            turns.append((QUESTIONS[other], facts[other]))
        kinds.append(_messages(sid, name, turns))
    for i in range(max(1, n // 4)):
        im, facts = _count_image(rng)
        name = _save_image(im, folder, f"{split}_count_{i:06d}", i)
        kinds.append(_messages(f"{split}-count-{i}", name, [(QUESTIONS["count"], facts["count"])]))
    rng.shuffle(kinds)
    return {"vila": vila, "kinds": kinds}


def _video_split(folder: Path, split: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        direction = DIRECTIONS[i % len(DIRECTIONS)]
        colour = rng.choice(list(COLOURS))
        name = f"videos/{split}_{i:06d}.mp4"
        write_video(folder / name, direction, COLOURS[colour], rng.choice(SHAPES), _background(rng))
        rows.append(
            _vila(f"video-{split}-{i}", "video", name, [(QUESTIONS["direction"], direction)])
        )
    rng.shuffle(rows)
    return rows


def _media_columns(row: dict[str, Any]) -> list[str]:
    return [k for k in ("image", "images", "video", "videos") if k in row]


def _embedded_rows(folder: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with every media path replaced by an `Image` cell holding its bytes."""
    out = []
    for original in rows:
        row = dict(original)
        for key in _media_columns(row):
            value = row[key]
            cells = [{"bytes": (folder / v).read_bytes(), "path": v} for v in _as_list(value)]
            row[key] = cells if isinstance(value, list) else cells[0]
        out.append(row)
    return out


def _as_list(value: Any) -> list[str]:
    return list(value) if isinstance(value, list) else [value]


def write_parquet(folder: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    """`parquet/<name>.parquet` with embedded media (pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = folder / "parquet" / f"{name}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(_embedded_rows(folder, rows))
    pq.write_table(table, out, row_group_size=PARQUET_ROW_GROUP)
    return out


def write_shards(folder: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    """`shards/<name>-NNNN.tar` (WebDataset layout) and their wids index; returns the
    index."""
    import io
    import tarfile

    from vlaunch_core.data.sources.tar import write_wids_index

    out = folder / "shards"
    out.mkdir(parents=True, exist_ok=True)
    shards: list[tuple[str, int]] = []
    for first in range(0, len(rows), TAR_SHARD_SAMPLES):
        chunk = rows[first : first + TAR_SHARD_SAMPLES]
        shard = f"{name}-{len(shards):04d}.tar"
        with tarfile.open(out / shard, "w", format=tarfile.USTAR_FORMAT) as tf:
            for i, row in enumerate(chunk, start=first):
                key = f"{i:06d}"
                record = dict(row)
                members: dict[str, bytes] = {}
                for column in _media_columns(row):
                    refs = []
                    for k, path in enumerate(_as_list(row[column])):
                        ext = Path(path).suffix.lstrip(".").lower()
                        ext = ext if not members.get(ext) else f"{k}.{ext}"
                        members[ext] = (folder / path).read_bytes()
                        refs.append(ext)
                    record[column] = refs if isinstance(row[column], list) else refs[0]
                members = {"json": json.dumps(record).encode(), **members}
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tf.addfile(info, io.BytesIO(data))
        shards.append((shard, len(chunk)))
    index = out / f"{name}.wids.json"
    write_wids_index(index, shards, name)
    return index


def _check_target(folder: Path) -> None:
    """Write only into a new or empty folder, or over an earlier shapes dataset: never among
    files vlaunch did not create."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file", hint="give a folder for the dataset")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError, RecursionError):
        meta = None
    if not (isinstance(meta, dict) and meta.get("generator") == "vlaunch data synth"):
        raise UserError(
            f"{folder} is not empty and holds no shapes dataset (meta.json of `vlaunch data "
            "synth`): nothing was written",
            hint="give a new or empty folder",
        )


def synthesize(
    out_dir: str | Path,
    sizes: SynthSizes | None = None,
    seed: int = 0,
    if_missing: bool = False,
    formats: tuple[str, ...] = ("json",),
) -> Path:
    """Write the shapes dataset under `out_dir`; returns the path of its `meta.json`.
    `formats` adds Parquet (`parquet`) and WebDataset shards (`webdataset`) of every file."""
    sizes = sizes or SynthSizes()
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown formats {unknown}; known: {', '.join(FORMATS)}")
    folder = Path(out_dir)
    meta_path = folder / "meta.json"
    if if_missing and meta_path.is_file():
        try:
            had = set(json.loads(meta_path.read_text()).get("formats", ["json"]))
        except (ValueError, RecursionError, AttributeError):
            had = set()
        if set(formats) <= had:
            logger.info("%s already exists: nothing to do", meta_path)
            return meta_path
    _check_target(folder)
    try:
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "videos").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot create the dataset folder: {e.strerror}") from None
    rng = random.Random(seed)
    files: dict[str, int] = {}
    for split, n, nv in (
        ("train", sizes.train, sizes.video_train),
        ("eval", sizes.eval, sizes.video_eval),
    ):
        rows = _image_split(folder, split, n, rng)
        _write_json(folder / f"{split}.json", rows["vila"])
        _write_jsonl(folder / f"kinds_{split}.jsonl", rows["kinds"])
        videos = _video_split(folder, split, nv, rng)
        _write_json(folder / f"video_{split}.json", videos)
        written = {
            f"{split}.json": rows["vila"],
            f"kinds_{split}.jsonl": rows["kinds"],
            f"video_{split}.json": videos,
        }
        files |= {name: len(r) for name, r in written.items()}
        for name, r in written.items():
            stem = name.split(".")[0]
            if "parquet" in formats and r:
                files[str(write_parquet(folder, stem, r).relative_to(folder))] = len(r)
            if "webdataset" in formats and r:
                files[str(write_shards(folder, stem, r).relative_to(folder))] = len(r)
    meta = {
        "generator": "vlaunch data synth",
        "seed": seed,
        "formats": [f for f in FORMATS if f in formats or f == "json"],
        "files": files,
        "questions": {
            kind: {
                "question": QUESTIONS[kind],
                "answers": list(ANSWERS[kind]),
                "chance": round(1 / len(ANSWERS[kind]), 4),
            }
            for kind in QUESTIONS
        },
        "image_size": IMAGE_SIZE,
        "video": {"size": VIDEO_SIZE, "frames": VIDEO_FRAMES, "fps": VIDEO_FPS},
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")  # written last: marks completion
    return meta_path
