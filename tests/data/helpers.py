"""Small file builders shared by the data tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path, rows: list[Any]) -> Path:
    path.write_text(json.dumps(rows, indent=1))
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def vila(image: str | list[str] | None, *turns: str, **extra: Any) -> dict[str, Any]:
    """A VILA sample: turns alternate human / gpt."""
    convs = [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(turns)]
    out: dict[str, Any] = {"conversations": convs, **extra}
    if image is not None:
        out["image"] = image
    return out


def make_video(path: Path, frames: int, fps: int = 10, size: int = 32, gop: int = 10) -> Path:
    """An H.264 mp4 whose frame i has grey level round(i * 250 / (frames - 1))."""
    import av
    import numpy as np

    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "crf": "0",
            "preset": "ultrafast",
            "bf": "0",
        }
        for i in range(frames):
            grey = round(i * 250 / max(1, frames - 1))
            img = np.full((size, size, 3), grey, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def frame_index(frame: Any, frames: int) -> int:
    """Which frame of a `make_video` video this is (from its grey level)."""
    return round(float(frame.mean()) * max(1, frames - 1) / 250)
