"""Data sources: the trainer's loader over WebDataset tar shards and Parquet with embedded
images, against JSON Lines + loose image files, on mixtures of 20,480 samples.

Each format holds the same 20,480 samples (VILA records, one 256x192 JPEG each) as two
datasets of 10,240 mixed `A+B`: JSON Lines with 20,480 image files; Parquet files of 2,048
rows in row groups of 128 with the JPEG bytes embedded; tar shards of 1,024 samples
(`<key>.json` + `<key>.jpg`) with a wids index. A fourth mixture takes all three (61,440).

Per mixture, in a fresh process (so that its peak RSS is its own):

- startup: `build_train_data` (the JSON index pass checks every image file; Parquet reads
  footers; the tar shards are counted from their wids index);
- loader samples/s: the trainer's `DataLoader` (`data.num_workers: auto`) iterated without
  training: read, decode, chat template, tiny Qwen2-VL processor, collation; median of 3
  passes of 40 micro-batches of 4, each pass from another step (other shards), the first
  micro-batch of a pass not timed;
- peak RSS of the rank process and of its largest loader worker (`getrusage`, after the
  workers exited);
- trainer samples/s: the plain loop (one process) training tiny Qwen2-VL with LoRA on the
  same mixture and batch: median of the steps after the first 2 of 6. Ratio = loader /
  trainer (above 1: the loader keeps ahead).
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BIN, REPO, bench_env
from bench.jobs import BENCH_ROOT, job_spec, run_training, trainer_command, write_spec

SAMPLES = 20_480
HALVES = ("a", "b")
DISTINCT = 512
IMAGE_SIZE = (256, 192)
PARQUET_FILE_ROWS = 2048
PARQUET_ROW_GROUP = 128
TAR_SHARD = 1024
MODEL = "tiny:qwen2_vl"
FORMATS = ("json", "parquet", "webdataset")
MIXTURES = {**{f: (f,) for f in FORMATS}, "all three": FORMATS}
GLOBAL, MICRO = 16, 4
BATCHES, PASSES = 40, 3


def make_data(root: Path = BENCH_ROOT, samples: int = SAMPLES) -> Path:
    """The three copies of the samples, built once for each count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.data_pipeline import _picture
    from vlaunch_core.data.sources.tar import write_wids_index

    folder = root / "data_sources" / f"data-{samples}"
    done = folder / "done"
    made = f"samples={samples} size={IMAGE_SIZE} v1\n"
    if done.is_file() and done.read_text() == made:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = random.Random(0)
    pictures = []
    for _ in range(DISTINCT):
        buf = io.BytesIO()
        _picture(rng, IMAGE_SIZE).save(buf, "JPEG", quality=85)
        pictures.append(buf.getvalue())
    per_half = samples // len(HALVES)
    for h, half in enumerate(HALVES):
        rows, embedded, members = [], [], []
        (folder / "images" / half).mkdir(parents=True, exist_ok=True)
        for i in range(per_half):
            n = h * per_half + i
            name = f"images/{half}/{i:06d}.jpg"
            (folder / name).write_bytes(pictures[n % DISTINCT])
            convs = [
                {"from": "human", "value": "<image>\nDescribe the picture in one sentence."},
                {"from": "gpt", "value": f"A pattern of shapes, number {n}."},
            ]
            rows.append({"id": str(n), "image": name, "conversations": convs})
            embedded.append({**rows[-1], "image": {"bytes": pictures[n % DISTINCT], "path": name}})
            members.append((f"{n:08d}", {**rows[-1], "image": "jpg"}, pictures[n % DISTINCT]))
        (folder / f"{half}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "parquet" / half).mkdir(parents=True, exist_ok=True)
        for k in range(0, per_half, PARQUET_FILE_ROWS):
            pq.write_table(
                pa.Table.from_pylist(embedded[k : k + PARQUET_FILE_ROWS]),
                folder / "parquet" / half / f"part-{k // PARQUET_FILE_ROWS:05d}.parquet",
                row_group_size=PARQUET_ROW_GROUP,
            )
        shards = _write_tar(folder / "shards", half, members)
        write_wids_index(folder / "shards" / f"{half}.wids.json", shards, half)
    done.write_text(made)
    return folder


def _write_tar(
    out: Path, half: str, samples: list[tuple[str, Any, bytes]]
) -> list[tuple[str, int]]:
    import tarfile

    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for k in range(0, len(samples), TAR_SHARD):
        name = f"{half}-{k // TAR_SHARD:04d}.tar"
        with tarfile.open(out / name, "w", format=tarfile.USTAR_FORMAT) as tf:
            for key, record, jpeg in samples[k : k + TAR_SHARD]:
                for ext, data in (("json", json.dumps(record).encode()), ("jpg", jpeg)):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        shards.append((name, len(samples[k : k + TAR_SHARD])))
    return shards


def _datasets(folder: Path, formats: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out = {}
    for fmt in formats:
        for half in HALVES:
            if fmt == "json":
                entry = {"data_path": str(folder / f"{half}.jsonl"), "media_dir": str(folder)}
            elif fmt == "parquet":
                entry = {"data_path": str(folder / "parquet" / half), "media_dir": str(folder)}
            else:
                entry = {
                    "data_path": str(folder / "shards" / f"{half}.wids.json"),
                    "source": "webdataset",
                    "media_dir": str(folder),
                }
            out[f"{fmt}_{half}"] = entry
    return out


def _spec(
    name: str, folder: Path, formats: tuple[str, ...], steps: int, out_dir: Path
) -> dict[str, Any]:
    return job_spec(
        f"bench-sources-{name.replace(' ', '-')}",
        model=MODEL,
        datasets=_datasets(folder, formats),
        out_dir=out_dir,
        data={"max_length": 512, "num_workers": "auto"},
        train={"global_batch_size": GLOBAL, "micro_batch_size": MICRO, "max_steps": steps},
    )


def measure_loader(spec_path: Path, batches: int = BATCHES, passes: int = PASSES) -> dict[str, Any]:
    """In this process: startup, loader samples/s, peak RSS (see the module docstring)."""
    import yaml

    from trainer.data.build import build_train_data, loader_settings
    from trainer.data.processors import load_processor
    from vlaunch_core.plan import make_plan
    from vlaunch_core.spec_load import spec_from_dict

    spec = spec_from_dict(yaml.safe_load(spec_path.read_text()))
    processor, family = load_processor(spec.model.name_or_path)
    t0 = time.perf_counter()
    data = build_train_data(spec, processor, family, micro_batch_size=MICRO)
    startup = time.perf_counter() - t0
    settings = loader_settings(spec, make_plan(spec), local_world_size=1)
    rates = []
    steps = data.sampler.steps_per_epoch
    for p in range(passes):
        data.sampler.start_at((p * steps) // passes)
        it = iter(data.loader(**settings))
        next(it)
        t = time.perf_counter()
        n = sum(next(it).num_samples for _ in range(batches))
        rates.append(n / (time.perf_counter() - t))
        del it  # the workers exit (and are waited for)
    return {
        "samples": len(data.dataset),
        "startup_s": round(startup, 2),
        "samples_per_s": round(statistics.median(rates), 1),
        "workers": settings["num_workers"],
        "rss_rank_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_worker_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }


def run(
    *,
    samples: int = SAMPLES,
    mixtures: tuple[str, ...] = tuple(MIXTURES),
    batches: int = BATCHES,
    passes: int = PASSES,
    train_steps: int = 6,
    train_warmup: int = 2,
    root: Path = BENCH_ROOT,
) -> dict[str, Any]:
    """Every mixture's row (see the module docstring); the defaults are `make bench`'s."""
    folder = make_data(root, samples)
    work = root / "data_sources" / "runs"
    rows = []
    for name in mixtures:
        spec = _spec(name, folder, MIXTURES[name], train_steps, work)
        path = write_spec(spec, work)
        argv = ["-m", "bench.data_sources", "--measure", str(path), str(batches), str(passes)]
        proc = subprocess.run(
            [str(BIN / "python"), *argv],
            cwd=REPO, env=bench_env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"loader measurement failed:\n{proc.stderr[-3000:]}")
        loader = json.loads(proc.stdout.strip().splitlines()[-1])
        threads = max(1, (os.cpu_count() or 1) - loader["workers"])
        trained = run_training(
            trainer_command(path), work / spec["name"], env=bench_env(threads=threads)
        )
        trainer = statistics.median(
            float(r["samples_per_s"]) for r in trained.train_records(skip=train_warmup)
        )
        rows.append(
            {
                "mixture": name,
                **loader,
                "trainer_samples_per_s": round(trainer, 1),
                "trainer_threads": threads,
                "ratio": round(loader["samples_per_s"] / trainer, 2),
            }
        )
    return {
        "name": "data_sources",
        "setup": {
            "samples": f"{samples:,} per format (two datasets of {samples // 2:,}, A+B)",
            "image": f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} JPEG (quality 85), one per sample",
            "parquet": f"files of {PARQUET_FILE_ROWS} rows, row groups of {PARQUET_ROW_GROUP}",
            "tar": f"shards of {TAR_SHARD} samples, wids index",
            "model": f"{MODEL}, LoRA r=16, fp32, 1 process",
            "batch": f"global {GLOBAL} = micro {MICRO} x accumulation {GLOBAL // MICRO}",
            "loader": f"median of {passes} passes of {batches} micro-batches",
            "trainer": f"median of the steps after the first {train_warmup} of {train_steps}",
        },
        "rows": rows,
        "command": "python -m bench.data_sources",
    }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        result = measure_loader(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        print(json.dumps(result))
        return
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
