"""Small datasets in every source format, built with each format's own writer, from the
synthetic shapes: Parquet (pyarrow), `save_to_disk` (datasets), a hub dataset laid out in a
temporary Hugging Face cache (huggingface_hub's cache layout, data files written by datasets'
`to_parquet`, the repository's `configs:` in its README), and WebDataset tar shards.

Every dataset has images embedded as bytes (even samples), images referenced by a path under
the media root (odd samples) and one embedded video. `faults=True` plants one fault of each
kind the format can have, at known (shard, row) places, returned as `expected`.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUESTION = "What colour is the shape? Answer with one word."
VIDEO_QUESTION = "Which way does the shape move: left, right, up or down?"
HUB_ID = "vlaunch-tests/shapes-mixed"
LLAVA_MIX_ID = "HuggingFaceH4/llava-instruct-mix-vsft"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Built:
    """A dataset on disk: its registry entry and the faults planted in it."""

    entry: dict[str, Any]
    expected: set[tuple[str, str, int]] = field(default_factory=set)
    """(problem kind, shard file name, row) of every planted fault."""
    samples: int = 0
    images: int = 0
    videos: int = 0
    env: dict[str, str] = field(default_factory=dict)
    """Environment a process needs to see it (HF_HOME for the hub dataset)."""


@dataclass(frozen=True)
class Item:
    id: str
    kind: str  # image | video
    path: str  # relative to the shapes folder (the media root)
    answer: str


def items(shapes: Path, n_images: int) -> list[Item]:
    """`n_images` colour questions and one video question of the shapes dataset."""
    rows = json.loads((shapes / "train.json").read_text())[:n_images]
    video = json.loads((shapes / "video_train.json").read_text())[0]
    out = [Item(r["id"], "image", r["image"], r["conversations"][1]["value"]) for r in rows]
    video_item = Item(video["id"], "video", video["video"], video["conversations"][1]["value"])
    out.insert(len(out) // 2, video_item)
    return out


# --------------------------------------------------------------------------- messages rows


def _part(kind: str, text: str | None = None, image: str | None = None) -> dict[str, Any]:
    return {"type": kind, "text": text, "image": image}


def message_row(shapes: Path, i: int, item: Item) -> dict[str, Any]:
    """A messages record: even images embedded in `images`, odd ones named inline by path;
    the video embedded in `videos`."""
    question = VIDEO_QUESTION if item.kind == "video" else QUESTION
    media: dict[str, Any] = {"images": [], "videos": []}
    if item.kind == "video":
        first = _part("video")
        media["videos"] = [{"bytes": (shapes / item.path).read_bytes(), "path": None}]
    elif i % 2 == 0:
        first = _part("image")
        media["images"] = [{"bytes": (shapes / item.path).read_bytes(), "path": None}]
    else:
        first = _part("image", image=item.path)
    return {
        "id": item.id,
        "messages": [
            {"role": "user", "content": [first, _part("text", text=question)]},
            {"role": "assistant", "content": [_part("text", text=item.answer)]},
        ],
        **media,
    }


def message_faults(rows: list[dict[str, Any]], where: Callable[[int], tuple[str, int]]) -> set:
    """Plant faults in messages rows (by index) and return what data check must report."""
    image_rows = [i for i, r in enumerate(rows) if r["images"] or _inline(r)]
    embedded = [i for i in image_rows if rows[i]["images"]]
    referenced = [i for i in image_rows if not rows[i]["images"]]
    a, b, c, d = embedded[1], referenced[1], image_rows[-1], referenced[-1]
    rows[a]["images"][0]["bytes"] = b"\x89PNG\r\n\x1a\n not really a png"
    rows[b]["messages"][0]["content"][0]["image"] = "images/no_such_image.png"
    rows[c]["messages"] = list(reversed(rows[c]["messages"]))
    rows[d]["messages"][1]["role"] = "robot"
    return {
        ("unreadable_media", *where(a)),
        ("missing_media", *where(b)),
        ("misordered_turns", *where(c)),
        ("unknown_role", *where(d)),
    }


def _inline(row: dict[str, Any]) -> bool:
    return any(p.get("image") for m in row["messages"] for p in m["content"])


def _counts(rows: list[dict[str, Any]]) -> tuple[int, int]:
    images = sum(len(r["images"]) + _inline(r) for r in rows)
    videos = sum(len(r["videos"]) for r in rows)
    return images, videos


# --------------------------------------------------------------------------- Parquet


def build_parquet(shapes: Path, out: Path, n: int = 12, faults: bool = False) -> Built:
    """Two Parquet shards (pyarrow), row groups of 4."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [message_row(shapes, i, it) for i, it in enumerate(items(shapes, n))]
    half = (len(rows) + 1) // 2
    names = ["part-00000.parquet", "part-00001.parquet"]
    expected = message_faults(rows, lambda i: (names[i // half], i % half)) if faults else set()
    out.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        table = pa.Table.from_pylist(rows[k * half : (k + 1) * half])
        pq.write_table(table, out / name, row_group_size=4)
    images, videos = _counts(rows)
    entry = {"data_path": str(out), "media_dir": str(shapes)}
    return Built(entry, expected, len(rows), images, videos)


# --------------------------------------------------------------------------- datasets


def hf_features() -> Any:
    from datasets import Features, Image, List, Value, Video

    part = {"type": Value("string"), "text": Value("string"), "image": Value("string")}
    return Features(
        {
            "id": Value("string"),
            "messages": List({"role": Value("string"), "content": List(part)}),
            "images": List(Image()),
            "videos": List(Video()),
        }
    )


def build_save_to_disk(shapes: Path, out: Path, n: int = 12, faults: bool = False) -> Built:
    """`datasets.Dataset.save_to_disk` of a DatasetDict (train and test), 2 shards."""
    from datasets import Dataset, DatasetDict

    rows = [message_row(shapes, i, it) for i, it in enumerate(items(shapes, n))]
    half = (len(rows) + 1) // 2
    names = [f"data-0000{k}-of-00002.arrow" for k in range(2)]
    expected = message_faults(rows, lambda i: (names[i // half], i % half)) if faults else set()
    train = Dataset.from_list(rows, features=hf_features())
    test = Dataset.from_list(rows[:2], features=hf_features())
    DatasetDict({"train": train, "test": test}).save_to_disk(
        str(out), num_shards={"train": 2, "test": 1}
    )
    images, videos = _counts(rows)
    entry = {"data_path": str(out), "split": "train", "media_dir": str(shapes)}
    return Built(entry, expected, len(rows), images, videos)


def lay_out_hub_dataset(
    hf_home: Path, repo_id: str, splits: dict[str, list[Any]], features: Any, shards: int = 1
) -> Path:
    """A hub dataset as the Hugging Face cache holds it after `hf download --repo-type
    dataset REPO` (`$HF_HOME/hub/datasets--ORG--NAME/{refs/main, snapshots/<commit>/...}`):
    the repository's README with its `configs:` and `data/<split>-0000k-of-0000n.parquet`
    files written by datasets' own `to_parquet` (as `push_to_hub` writes them)."""
    from datasets import Dataset

    repo = hf_home / "hub" / ("datasets--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (snapshot / "data").mkdir(parents=True, exist_ok=True)
    config = ["configs:", "- config_name: default", "  data_files:"]
    for split, rows in splits.items():
        ds = Dataset.from_list(rows, features=features)
        n = min(shards, len(rows))
        for k in range(n):
            part = ds.shard(n, k, contiguous=True)
            part.to_parquet(str(snapshot / "data" / f"{split}-{k:05d}-of-{n:05d}.parquet"))
        config += [f"  - split: {split}", f"    path: data/{split}-*"]
    (snapshot / "README.md").write_text("---\n" + "\n".join(config) + "\n---\n# test copy\n")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def build_hub(shapes: Path, hf_home: Path, n: int = 12, faults: bool = False) -> Built:
    """The shapes as a hub dataset (`HUB_ID`) in a Hugging Face cache at `hf_home`."""
    rows = [message_row(shapes, i, it) for i, it in enumerate(items(shapes, n))]
    half = (len(rows) + 1) // 2
    names = [f"train-0000{k}-of-00002.parquet" for k in range(2)]
    expected = message_faults(rows, lambda i: (names[i // half], i % half)) if faults else set()
    lay_out_hub_dataset(hf_home, HUB_ID, {"train": rows, "test": rows[:2]}, hf_features(), 2)
    images, videos = _counts(rows)
    entry = {"data_path": HUB_ID, "source": "hf", "media_dir": str(shapes)}
    return Built(entry, expected, len(rows), images, videos, {"HF_HOME": str(hf_home)})


def build_llava_mix(shapes: Path, hf_home: Path, n: int = 12) -> int:
    """A local copy of `HuggingFaceH4/llava-instruct-mix-vsft` with its schema (`messages` of
    role and content parts {index, text, type}, `images` as a list of `Image`), made of shapes
    colour questions; returns the number of training samples."""
    from datasets import Features, Image, List, Value

    part = {"index": Value("int64"), "text": Value("string"), "type": Value("string")}
    features = Features(
        {
            "messages": List({"content": List(part), "role": Value("string")}),
            "images": List(Image()),
        }
    )

    def row(it: Item) -> dict[str, Any]:
        return {
            "messages": [
                {
                    "content": [
                        {"index": 0, "text": None, "type": "image"},
                        {"index": None, "text": QUESTION, "type": "text"},
                    ],
                    "role": "user",
                },
                {
                    "content": [{"index": None, "text": it.answer, "type": "text"}],
                    "role": "assistant",
                },
            ],
            "images": [{"bytes": (shapes / it.path).read_bytes(), "path": None}],
        }

    rows = [row(it) for it in items(shapes, n) if it.kind == "image"]
    lay_out_hub_dataset(hf_home, LLAVA_MIX_ID, {"train": rows, "test": rows[:4]}, features)
    return len(rows)


# --------------------------------------------------------------------------- tar shards


def build_tar(
    shapes: Path, out: Path, n: int = 12, faults: bool = False, per_shard: int = 4
) -> Built:
    """WebDataset shards `shard-{0000..N}.tar` of VILA records: `<key>.json` with `"image":
    "png"` and a `<key>.png` member (even samples), `"image": "images/x.png"` (odd samples,
    referenced), one `<key>.mp4` video; written with tarfile in WebDataset's layout."""
    its = items(shapes, n)
    out.mkdir(parents=True, exist_ok=True)
    expected: set[tuple[str, str, int]] = set()
    samples: list[tuple[str, dict[str, bytes]]] = []
    images = videos = 0
    for i, it in enumerate(its):
        tag = "<video>" if it.kind == "video" else "<image>"
        question = VIDEO_QUESTION if it.kind == "video" else QUESTION
        record: dict[str, Any] = {
            "id": it.id,
            "conversations": [
                {"from": "human", "value": f"{tag}\n{question}"},
                {"from": "gpt", "value": it.answer},
            ],
        }
        ext = Path(it.path).suffix.lstrip(".")
        members: dict[str, bytes] = {}
        if it.kind == "video":
            record["video"] = ext
            members[ext] = (shapes / it.path).read_bytes()
            videos += 1
        elif i % 2 == 0:
            record["image"] = ext
            members[ext] = (shapes / it.path).read_bytes()
            images += 1
        else:
            record["image"] = it.path
            images += 1
        samples.append((f"{i:06d}", {"json": json.dumps(record).encode(), **members}))
    n_shards = -(-len(samples) // per_shard)
    names = [f"shard-{k:04d}.tar" for k in range(n_shards)]

    def where(i: int) -> tuple[str, int]:
        return names[i // per_shard], i % per_shard

    if faults:
        embedded = [i for i, (_, m) in enumerate(samples) if "png" in m or "jpg" in m]
        referenced = [i for i, (_, m) in enumerate(samples) if set(m) == {"json"}]
        a, b, c = embedded[1], referenced[1], referenced[2]
        ext = next(e for e in samples[a][1] if e != "json")
        samples[a][1][ext] = b"\xff\xd8\xff not a jpeg"
        expected.add(("unreadable_media", *where(a)))
        rec = json.loads(samples[b][1]["json"])
        rec["image"] = "images/no_such_image.png"
        samples[b][1]["json"] = json.dumps(rec).encode()
        expected.add(("missing_media", *where(b)))
        samples[c][1]["json"] = b'{"id": "broken", "conversations": ['
        expected.add(("invalid_json", *where(c)))
    for k, name in enumerate(names):
        with tarfile.open(out / name, "w", format=tarfile.USTAR_FORMAT) as tf:
            for key, members in samples[k * per_shard : (k + 1) * per_shard]:
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime = len(data), 0
                    tf.addfile(info, io.BytesIO(data))
    if faults:  # the last shard cut short inside its last member: that sample is lost
        last = out / names[-1]
        with tarfile.open(last) as tf:
            member = tf.getmembers()[-1]
        last.write_bytes(last.read_bytes()[: member.offset_data + member.size // 2])
        expected.add(("invalid_sample", names[-1], (len(samples) - 1) % per_shard))
    pattern = str(out / f"shard-{{0000..{n_shards - 1:04d}}}.tar")
    entry = {"data_path": pattern, "media_dir": str(shapes)}
    return Built(entry, expected, len(samples), images, videos)


BUILDERS = ("parquet", "save_to_disk", "hub", "webdataset")


def build(kind: str, shapes: Path, root: Path, n: int = 12, faults: bool = False) -> Built:
    """One dataset of a kind under `root` (the hub kind: in the cache `root/hf_home`)."""
    if kind == "parquet":
        return build_parquet(shapes, root / "parquet", n, faults)
    if kind == "save_to_disk":
        return build_save_to_disk(shapes, root / "save_to_disk", n, faults)
    if kind == "hub":
        return build_hub(shapes, root / "hf_home", n, faults)
    if kind == "webdataset":
        return build_tar(shapes, root / "shards", n, faults)
    raise ValueError(kind)
