"""Data pipeline: samples/s of decode + processor against what the trainer consumes.

Media of realistic size, generated once: 640x480 JPEG photos-like images and 8 s, 24 fps,
640x360 H.264 videos (a keyframe every 2 s) of which 8 frames are sampled per sample.

- loader: the trainer's own `DataLoader` (`build_train_data(...).loader(...)` with the
  workers and prefetch the trainer picks, `trainer.data.build.loader_settings`, for
  `data.num_workers: auto` and one rank on this machine) iterated without training: decode,
  chat template, processor, collation. The first micro-batch (worker start-up) is not timed.
- trainer: the plain loop (one process) training the tiny Qwen2-VL with LoRA on the same
  data, batch and workers, with one math thread per core the workers leave free (set
  explicitly, so that the trainer and its workers do not oversubscribe the cores): median
  samples/s of the steps after warm-up.
- ratio = loader / trainer samples/s. Above 1 the loader keeps up; both share the same cores
  during training, so the standalone loader rate is an upper bound and a ratio near 1 means
  a bottleneck.

`real_size` rows run the same loader with Qwen2-VL-2B's image preprocessing (14 px patches,
2x2 merge, default pixel limits) instead of the tiny model's 32 px one; no CPU trainer can
consume such batches at GPU speed, so they report the loader alone.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import bench_env
from bench.jobs import BENCH_ROOT, job_spec, run_training, trainer_command, write_spec, write_vila

IMAGE_SIZE = (640, 480)
VIDEO_SIZE = (640, 360)
VIDEO_SECONDS, VIDEO_FPS, VIDEO_GOP = 8, 24, 48
FRAMES = 8
MODEL = "tiny:qwen2_vl"


def _picture(rng: random.Random, size: tuple[int, int]) -> Any:
    """A gradient with shapes and a little noise: JPEG-compresses like a photo, not a flat fill."""
    import numpy as np
    from PIL import Image, ImageDraw

    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack(
        [(x * rng.random() + y * rng.random()) % 256 for _ in range(3)], axis=-1
    ).astype(np.float32)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 12, base.shape)
    im = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(3, 8)):
        x0, y0 = rng.randrange(w - 40), rng.randrange(h - 40)
        box = (x0, y0, x0 + rng.randint(20, w // 3), y0 + rng.randint(20, h // 3))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return im


def _video(path: Path, rng: random.Random) -> None:
    import av
    import numpy as np

    w, h = VIDEO_SIZE
    background = np.asarray(_picture(rng, VIDEO_SIZE))
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    side = 60
    with av.open(str(path), mode="w") as out:
        stream: Any = out.add_stream(codec, rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "g": str(VIDEO_GOP), "crf": "23"}
        frames = VIDEO_SECONDS * VIDEO_FPS
        for i in range(frames):
            frame = background.copy()
            x = int((w - side) * i / frames)
            frame[h // 2 - side // 2 : h // 2 + side // 2, x : x + side] = (230, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_media(folder: Path, images: int = 48, videos: int = 8, seed: int = 0) -> Path:
    """The media files and two VILA datasets (`images.json`, `videos.json`), built once for
    each set of counts."""
    done = folder / "done"
    made = f"images={images} videos={videos} seed={seed}\n"
    if done.is_file() and done.read_text() == made:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        _picture(rng, IMAGE_SIZE).save(folder / "images" / f"{i:04d}.jpg", quality=90)
    for i in range(videos):
        _video(folder / "videos" / f"{i:04d}.mp4", rng)

    def row(i: int, key: str, name: str, question: str) -> dict[str, Any]:
        tag = f"<{key}>\n"
        return {
            "id": f"{key}-{i}",
            key: name,
            "conversations": [
                {"from": "human", "value": tag + question},
                {"from": "gpt", "value": "A red square moves to the right over a pattern."},
            ],
        }

    write_vila(
        folder / "images.json",
        [
            row(i, "image", f"images/{i % images:04d}.jpg", "Describe the picture.")
            for i in range(256)
        ],
    )
    write_vila(
        folder / "videos.json",
        [row(i, "video", f"videos/{i % videos:04d}.mp4", "What happens?") for i in range(64)],
    )
    done.write_text(made)
    return folder


def _spec(kind: str, media: Path, out_dir: Path, steps: int, max_length: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"data_path": str(media / f"{kind}.json"), "media_dir": str(media)}
    if kind == "videos":
        entry |= {"is_video": True, "num_frames": FRAMES}
    return job_spec(
        f"bench-data-{kind}",
        model=MODEL,
        datasets={kind: entry},
        out_dir=out_dir,
        data={"max_length": max_length, "num_workers": "auto"},
        train={"global_batch_size": 16, "micro_batch_size": 4, "max_steps": steps},
    )


def real_size_processor(processor: Any) -> Any:
    """The tiny processor (tokenizer, chat template) with Qwen2-VL-2B's image and video
    preprocessing (the processors' defaults are the released model's)."""
    import copy

    out = copy.deepcopy(processor)
    out.image_processor = type(processor.image_processor)()
    out.video_processor = type(processor.video_processor)()
    return out


def loader_samples_per_s(
    spec_dict: dict[str, Any], *, real_size: bool, batches: int, repeats: int
) -> dict[str, Any]:
    """Samples/s of the trainer's DataLoader alone (first micro-batch not timed)."""
    from trainer.data.build import build_train_data, loader_settings
    from trainer.data.processors import load_processor
    from vlaunch_core.plan import make_plan
    from vlaunch_core.spec_load import spec_from_dict

    spec = spec_from_dict(spec_dict)
    processor, family = load_processor(spec.model.name_or_path)
    if real_size:
        processor = real_size_processor(processor)
    micro = int(spec.train.micro_batch_size)
    data = build_train_data(spec, processor, family, micro_batch_size=micro)
    settings = loader_settings(spec, make_plan(spec), local_world_size=1)
    rates, tokens = [], []
    for _ in range(repeats):
        data.sampler.start_at(0)
        it = iter(data.loader(**settings))
        next(it)
        t0 = time.perf_counter()
        n = 0
        for _ in range(batches):
            batch = next(it)
            n += batch.num_samples
            tokens.append(batch.num_tokens / batch.num_samples)
        rates.append(n / (time.perf_counter() - t0))
        del it
    return {
        "samples_per_s": round(statistics.median(rates), 2),
        "runs": repeats,
        "workers": settings["num_workers"],
        "tokens_per_sample": round(statistics.fmean(tokens), 1),
    }


def trainer_samples_per_s(spec_path: Path, run_dir: Path, warmup: int, threads: int) -> float:
    """Median samples/s of the plain loop's steps after `warmup`."""
    result = run_training(trainer_command(spec_path), run_dir, env=bench_env(threads=threads))
    records = result.train_records(skip=warmup)
    return float(statistics.median(float(r["samples_per_s"]) for r in records))


def run(
    *,
    batches: int = 6,
    repeats: int = 3,
    train_steps: int = 5,
    train_warmup: int = 2,
    train_repeats: int = 3,
    real_size: bool = True,
    images: int = 48,
    videos: int = 8,
    kinds: tuple[str, ...] = ("images", "videos"),
    root: Path = BENCH_ROOT,
) -> dict[str, Any]:
    """Loader and trainer samples/s for images and videos (see the module docstring)."""
    work = root / "data_pipeline"
    media = make_media(root / "media", images, videos)
    rows = []
    for kind in kinds:
        spec = _spec(kind, media, work / "runs", train_steps, 512)
        loader = loader_samples_per_s(spec, real_size=False, batches=batches, repeats=repeats)
        threads = max(1, (os.cpu_count() or 1) - loader["workers"])
        path = write_spec(spec, work)
        trained = [
            trainer_samples_per_s(path, work / "runs" / spec["name"], train_warmup, threads)
            for _ in range(train_repeats)
        ]
        trainer = statistics.median(trained)
        rows.append(
            {
                "media": kind,
                "preprocessing": "tiny Qwen2-VL (<= 32x32 px)",
                **loader,
                "trainer_samples_per_s": round(trainer, 2),
                "trainer_threads": threads,
                "trainer_runs": train_repeats,
                "ratio": round(loader["samples_per_s"] / trainer, 2),
            }
        )
        if real_size:
            big = _spec(kind, media, work / "runs", train_steps, 4096)
            rows.append(
                {
                    "media": kind,
                    "preprocessing": "Qwen2-VL-2B (14 px patches, 2x2 merge)",
                    **loader_samples_per_s(
                        big, real_size=True, batches=max(2, batches // 2), repeats=repeats
                    ),
                    "trainer_samples_per_s": None,
                    "ratio": None,
                }
            )
    return {
        "name": "data_pipeline",
        "media": {
            "images": f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} JPEG (quality 90)",
            "videos": f"{VIDEO_SECONDS} s, {VIDEO_FPS} fps, {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} "
            f"H.264, keyframe every {VIDEO_GOP} frames; {FRAMES} frames sampled per sample",
        },
        "setup": {
            "model": f"{MODEL}, LoRA r=16, fp32, 1 process",
            "batch": "global 16 = micro 4 x accumulation 4",
            "workers": "data.num_workers=auto",
            "loader_batches_timed": batches,
            "trainer_steps": train_steps,
            "trainer_warmup_steps_skipped": train_warmup,
        },
        "rows": rows,
        "command": "python -m bench.data_pipeline",
    }


def main() -> None:
    import json

    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
