"""Media: safe paths (never opening what escapes), Pillow images, PyAV video frames."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.helpers import frame_index, make_video, vila, write_json
from trainer.data.dataset import index_dataset
from vlaunch_core.data.check import CheckOptions, CheckSource, check_sources
from vlaunch_core.data.media import (
    MediaError,
    MediaRoot,
    load_image,
    load_video,
    probe_image,
    probe_video,
)
from vlaunch_core.data.registry import Dataset

_OPENED: list[str] = []
_RECORDING: list[bool] = [False]


def _audit(event: str, args: tuple) -> None:
    if _RECORDING[0] and event == "open" and args and isinstance(args[0], str | bytes | int):
        _OPENED.append(os.fsdecode(args[0]) if not isinstance(args[0], int) else "")


sys.addaudithook(_audit)  # audit hooks cannot be removed; it only records while enabled


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """tmp/a/b is the media root; tmp/etc/passwd is a real image ../../etc/passwd reaches."""
    media = tmp_path / "a" / "b"
    (media / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(media / "images" / "ok.png")
    (tmp_path / "etc").mkdir()
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "etc" / "passwd", format="PNG")
    return media


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "images/../../../etc/passwd", "..", "\x00x", ""]
)
def test_escaping_paths_are_refused(root: Path, name: str) -> None:
    with pytest.raises(MediaError) as e:
        MediaRoot(root).resolve(name)
    assert e.value.kind == "media_escape"


def test_symlinks_out_of_the_root_are_refused(root: Path, tmp_path: Path) -> None:
    (root / "images" / "link.png").symlink_to(tmp_path / "etc" / "passwd")
    (root / "linkdir").symlink_to(tmp_path / "etc")
    for name in ("images/link.png", "linkdir/passwd"):
        with pytest.raises(MediaError, match="outside the media root"):
            MediaRoot(root).resolve(name)
    (root / "images" / "inner.png").symlink_to(root / "images" / "ok.png")
    assert MediaRoot(root).resolve("images/inner.png") == (root / "images" / "ok.png").resolve()


def test_absolute_paths_inside_the_root_are_allowed(root: Path, tmp_path: Path) -> None:
    inside = root / "images" / "ok.png"
    assert MediaRoot(root).resolve(str(inside)) == inside.resolve()
    # A wider root is the explicit opt-in for absolute paths elsewhere.
    assert MediaRoot(tmp_path).resolve(str(tmp_path / "etc" / "passwd")).is_file()


def test_passwd_is_rejected_by_check_and_index_and_never_opened(root: Path) -> None:
    data = write_json(
        root / "d.json",
        [
            vila("images/ok.png", "<image>q", "a"),
            vila("../../etc/passwd", "<image>q", "a"),
            vila("/etc/passwd", "<image>q", "a"),
        ],
    )
    passwd = str((root / ".." / ".." / "etc" / "passwd").resolve())
    _OPENED.clear()
    _RECORDING[0] = True
    try:
        report = check_sources([CheckSource("d", data, root)], CheckOptions(decode=True))
        from vlaunch_core.spec import DatasetEntry

        _, problems = index_dataset(
            Dataset("d", DatasetEntry(data_path=str(data), media_dir=str(root)), "test")
        )
    finally:
        _RECORDING[0] = False
    assert [(p.kind, p.index) for p in report.problems] == [
        ("media_escape", 1),
        ("media_escape", 2),
    ]
    assert "../../etc/passwd" in report.problems[0].message
    assert "it is not opened" in report.problems[0].message
    assert [(p.kind, p.index) for p in problems] == [("media_escape", 1), ("media_escape", 2)]
    assert str((root / "images" / "ok.png").resolve()) in _OPENED  # the hook does record
    assert not any(p in (passwd, "/etc/passwd") for p in _OPENED)


def _exif_jpeg(path: Path, orientation: int) -> Path:
    img = Image.new("RGB", (40, 20), "white")
    img.paste((255, 0, 0), (0, 0, 10, 20))  # a red band on the left
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = _exif_jpeg(tmp_path / "rot.jpg", 6)  # displayed rotated 90 degrees clockwise
    img = load_image(path, 10_000)
    assert img.size == (20, 40)
    assert probe_image(path, 10_000) == (20, 40)
    top = np.asarray(img)[0:5].mean(axis=(0, 1))
    assert top[0] > 200 and top[1] < 80  # the left red band is now at the top


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "I;16"])
def test_images_come_back_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    Image.new(mode, (6, 4)).save(path)
    img = load_image(path, 10_000)
    assert (img.mode, img.size) == ("RGB", (6, 4))


def test_pad_to_square(tmp_path: Path) -> None:
    Image.new("RGB", (10, 4), (255, 0, 0)).save(tmp_path / "w.png")
    img = load_image(tmp_path / "w.png", 10_000, pad_background=(1, 2, 3))
    assert img.size == (10, 10)
    assert img.getpixel((0, 0)) == (1, 2, 3) and img.getpixel((5, 5)) == (255, 0, 0)


def test_pixel_limit_and_unreadable_images(tmp_path: Path) -> None:
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(MediaError, match="max_pixels=5000") as e:
        probe_image(tmp_path / "big.png", 5000)
    assert e.value.kind == "unreadable_media"
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(MediaError) as e:
        probe_image(tmp_path / "text.png", 10_000)
    assert e.value.kind == "unreadable_media"
    with pytest.raises(MediaError) as e:
        probe_image(tmp_path / "nope.png", 10_000)
    assert e.value.kind == "missing_media"


def test_truncated_jpeg_passes_the_header_probe_but_not_decoding(tmp_path: Path) -> None:
    Image.effect_noise((64, 64), 60).convert("RGB").save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert probe_image(tmp_path / "cut.jpg", 10_000) == (64, 64)
    with pytest.raises(MediaError, match="cannot decode") as e:
        load_image(tmp_path / "cut.jpg", 10_000)
    assert e.value.kind == "unreadable_media"


def test_video_frames_are_sampled_uniformly(tmp_path: Path) -> None:
    path = make_video(tmp_path / "v.mp4", frames=40, fps=10)
    info = probe_video(path)
    assert (info.width, info.height, info.frames) == (32, 32, 40)
    assert info.duration == pytest.approx(4.0, abs=0.15)
    frames = load_video(path, 4)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    # Centres of 4 equal segments of 40 frames: 5, 15, 25, 35.
    assert [frame_index(f, 40) for f in frames] == pytest.approx([5, 15, 25, 35], abs=1)
    assert load_video(path, 40).shape[0] == 40
    assert load_video(path, 100).shape[0] == 100  # more than it has: frames repeat


def test_video_by_fps_is_capped(tmp_path: Path) -> None:
    path = make_video(tmp_path / "v.mp4", frames=40, fps=10)
    assert load_video(path, 8, fps=2.0, max_frames=64).shape[0] == 8  # 4 s x 2 fps
    assert load_video(path, 8, fps=5.0, max_frames=6).shape[0] == 6


def test_long_video_is_not_decoded_whole(tmp_path: Path) -> None:
    path = make_video(tmp_path / "long.mp4", frames=600, fps=10, gop=10)
    stats: dict[str, int] = {}
    frames = load_video(path, 4, stats=stats)
    assert [frame_index(f, 600) for f in frames] == pytest.approx([75, 225, 375, 525], abs=3)
    assert stats["seeks"] == 4
    assert stats["decoded"] <= 4 * 12, stats  # at most a GOP per target, not 600 frames


@pytest.mark.parametrize("content", [b"\x00" * 1000, os.urandom(5000), b""])
def test_unreadable_videos(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.mp4").write_bytes(content)
    with pytest.raises(MediaError) as e:
        load_video(tmp_path / "bad.mp4", 4)
    assert e.value.kind == "unreadable_media"
    with pytest.raises(MediaError) as e:
        probe_video(tmp_path / "missing.mp4")
    assert e.value.kind == "missing_media"


def test_image_file_given_as_video(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "still.png")
    # An image is a one-frame "video" to FFmpeg; a JPEG/PNG renamed .mp4 still decodes.
    frames = load_video(tmp_path / "still.png", 2)
    assert frames.shape == (2, 8, 8, 3)
