"""vlaunch side by side with what a user would pick instead: TRL's `SFTTrainer` and a plain
`transformers.Trainer` + peft, on the same model, data, batch and threads (CPU).

- Model: a Qwen2.5-VL-shaped model with random weights (`bench.jobs.small_vlm`: the tiny
  Qwen2.5-VL's vision tower, processor and byte-level tokenizer, a decoder `HIDDEN` wide and
  `LAYERS` deep, `VOCAB` output rows: Qwen2.5-VL-3B's output-layer share), fp32, sdpa
  attention, no gradient checkpointing.
- Tuning: `lora` = vlaunch's `lora_llm` (LoRA r=16 on every Linear of the decoder layers,
  the projector trained in full); `full` = every parameter trained. The peers get the very
  same model built by `trainer.api.build_model` (same trainable parameters, same LoRA init)
  with peft's own LoRA Linear and transformers' `Conv3d` patch embedding (vlaunch runs the
  LoRA Linear as one autograd function, `trainer/models/lora_linear.py`, and the patch
  embedding as a matrix product, `trainer/models/patch_embed.py`).
- Data: single-turn instructions whose lengths follow LLaVA-1.5's instruction mix
  (`bench.packing.length_mix`, lengths / `SCALE`): 88% one image (192x192 px: 144
  image tokens = 576 / 4, the processor's pixel budget raised to keep that size) plus text,
  12% text only; the loss on the answer only. The same samples in the same order for everyone
  (no shuffling): vlaunch `data.shuffle=false`, the peers `train_sampling_strategy=
  "sequential"`.
- Batch: global 16 = micro `--micro` (4 by default; 16 is LLaVA-1.5's per-device batch) x
  the accumulation that makes 16, the same for every trainer; one process, AdamW (torch's
  fused kernel for all, transformers' default), constant LR, clipping 1.0. The larger the
  micro batch, the more of a padded one is padding (the tables' padding waste column), which
  is what packing removes.
- Every trainer: `THREADS` math thread(s) and `WORKERS` data-loader worker process(es).
- vlaunch: the plain loop (`trainer.loop.Recipe`), with and without `data.packing`; it encodes
  samples on the fly (chat template, processor, label mask) in its loader.
- TRL `SFTTrainer`: prompt-completion samples with images, `completion_only_loss`, fp32 (its
  config defaults to bf16 autocast); its own collator runs the processor on the fly (in its
  loader). TRL refuses packing and padding-free batching for vision datasets: it runs padded.
- `Trainer` + peft: samples encoded ahead by vlaunch's own encoder (untimed: identical ids,
  labels and pixels), a padding collator; the model's own loss from `labels`.
- Packing on other M-RoPE families (`PACKING_FAMILIES`: Qwen3-VL): vlaunch packed against
  vlaunch padded on the same decoder size with that family's tiny tower (LoRA).

Each run is a fresh process (`--child`) with `THREADS` math thread(s); the runs alternate
between the trainers. Step time = from one optimizer step's end to the next (data loading
included, as in vlaunch's metrics), the first `WARMUP` steps left out; per trainer the median
step time over the runs, step by step (every run trains the same samples at step k); tokens/s
= tokens of the timed steps / the sum of those medians, counted two ways: all tokens (padding
excluded) and target tokens (labels that carry a loss), as the micro batches reach the model.
Peak RSS: the training process's high-water mark (VmHWM) at the end (its loader worker not
included, one per trainer).

    python -m bench.peers [--repeats 3] [--steps 10] [--micro 4]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BIN, REPO, bench_env
from bench.jobs import BENCH_ROOT, fresh_run_dir, job_spec, small_vlm, write_spec, write_vila

HIDDEN, LAYERS = 256, 4
HEAD_SHARE = 2048 * 151_936 / (36 * (2 * 2048**2 + 2 * 2048 * 256 + 3 * 2048 * 11_008))
"""Qwen2.5-VL-3B's output layer against its 36 decoder layers, matmul weights per token
(0.112): hidden 2048, vocabulary 151,936; q/o 2048x2048, k/v 2048x256, MLP 3 x 2048x11,008."""
VOCAB = round(HEAD_SHARE * LAYERS * 16 * HIDDEN / 64) * 64
"""Rows of the output layer (and embeddings) that give this decoder (16 x HIDDEN^2 weights a
layer) the same output-layer share as Qwen2.5-VL-3B: 1,856, not the byte-level tokenizer's
264, so the output layer weighs in the step as in a real model."""
SCALE = 4
"""Lengths of the mix / 4: the chat template's ~20 tokens and the shortest question and answer
do not shrink with the scale, and at / 8 they held most image samples at one length. Padding
waste of the padded micro batches by the lengths written (192 samples): 16.5% at / 8, 22.2%
at / 4, against the mix's own 25.2% (`bench.packing`)."""
IMAGE_PX = (192, 192)
IMAGE_TOKENS = 576 // SCALE
"""12 x 12 image tokens (the tiny Qwen2.5-VL's 8-pixel patches, merged 2 x 2, make one token
of each 16 x 16 pixels; `MAX_PIXELS` lets the processor keep the image's size)."""
MAX_PIXELS = IMAGE_PX[0] * IMAGE_PX[1]
GLOBAL_BATCH = 16
MICRO = 4
"""The default micro batch. `make bench` also runs `micro=16`: LLaVA-1.5's own fine-tuning
recipe (scripts/v1_5/finetune.sh: per-device batch 16, 8 GPUs, global 128)."""
THREADS = 1
WORKERS = 1
"""Data-loader worker processes per trainer: the same for all, what vlaunch's
`data.num_workers: auto` picks for one rank on this 2-core machine."""
WARMUP = 2
MAX_LENGTH = 512
TRAINERS = ("vlaunch+packing", "vlaunch", "trl", "hf")
LABELS = {
    "vlaunch+packing": "vlaunch, packing",
    "vlaunch": "vlaunch, padded",
    "trl": "TRL SFTTrainer (padded: refuses packing for VLMs)",
    "hf": "transformers Trainer + peft (padded)",
}


# --------------------------------------------------------------------------- data


def _words(rng: random.Random, n: int) -> str:
    out: list[str] = []
    size = 0
    while size < n:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[: max(1, n)]


def write_data(folder: Path, n: int, seed: int = 0) -> Path:
    """`n` single-turn samples following LLaVA-1.5's mix / SCALE (VILA JSON + images)."""
    from PIL import Image

    from bench.packing import length_mix

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = []
    for i in range(16):
        name = f"img{i}-{IMAGE_PX[0]}x{IMAGE_PX[1]}.png"
        if not (images / name).is_file():
            colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            Image.new("RGB", IMAGE_PX, colour).save(images / name)
        names.append(f"images/{name}")
    rows = []
    overhead = 20  # chat template tokens (one byte-level token per byte)
    for i, length in enumerate(length_mix(n, seed, "llava-1.5")):
        text = max(12, abs(length) // SCALE - overhead - (IMAGE_TOKENS if length > 0 else 0))
        question = _words(rng, max(4, text // 5))
        row: dict[str, Any] = {
            "id": f"s{i}",
            "conversations": [
                {"from": "human", "value": ("<image>\n" if length > 0 else "") + question},
                {"from": "gpt", "value": _words(rng, max(4, text - text // 5))},
            ],
        }
        if length > 0:
            row["image"] = rng.choice(names)
        rows.append(row)
    return write_vila(folder / "instruct.json", rows)


def image_tokens(model: Path) -> int:
    """Image tokens the model's own processor gives one `IMAGE_PX` image."""
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    image = Image.new("RGB", IMAGE_PX, (120, 30, 200))
    out = processor(text=[processor.image_token], images=[image], return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return int((out["input_ids"] == image_id).sum())


def check_image_tokens(model: Path) -> None:
    """The data is what the page says: `IMAGE_TOKENS` per image (raise before any run)."""
    got = image_tokens(model)
    if got != IMAGE_TOKENS:
        raise RuntimeError(
            f"{model}: one {IMAGE_PX} px image gives {got} image tokens, not {IMAGE_TOKENS}"
        )


def accumulation(micro: int) -> int:
    """The accumulation steps that make `GLOBAL_BATCH` from micro batches of `micro`."""
    if micro < 1 or GLOBAL_BATCH % micro:
        raise ValueError(f"micro batch {micro} does not divide the global batch {GLOBAL_BATCH}")
    return GLOBAL_BATCH // micro


def spec_for(
    folder: Path,
    model: Path,
    data: Path,
    tuning: str,
    packing: bool,
    steps: int,
    micro: int = MICRO,
) -> dict[str, Any]:
    return job_spec(
        f"peers-{tuning}-{'packed' if packing else 'padded'}",
        model=str(model),
        datasets={"instruct": {"data_path": str(data), "media_dir": str(data.parent)}},
        out_dir=folder / "runs",
        data={
            "max_length": MAX_LENGTH,
            "packing": packing,
            "shuffle": False,
            "num_workers": WORKERS,
        },
        tuning={"preset": "lora_llm" if tuning == "lora" else "fft"},
        train={
            "global_batch_size": GLOBAL_BATCH,
            "micro_batch_size": micro,
            "grad_accum_steps": accumulation(micro),
            "max_steps": steps,
            "lr": 1e-4,
            "scheduler": "constant",
            "warmup_steps": 0,
            "host_memory_every": 1000,
        },
    )


# --------------------------------------------------------------------------- children


def _hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _vlaunch(job: Path) -> list[dict[str, float]]:
    from trainer.loop import Recipe
    from trainer.metrics import read_metrics
    from vlaunch_core.spec_load import load_spec

    spec = load_spec(job)
    fresh_run_dir(spec)
    recipe = Recipe(spec, quiet=True)
    try:
        recipe.setup()
        recipe.train()
    finally:
        recipe.cleanup()
    steps = []
    for r in read_metrics(recipe.run_dir.metrics_file):
        if r.get("kind") != "train":
            continue
        t = float(r["step_time_s"])
        steps.append(
            {
                "time": t,
                "tokens": float(r["tokens_per_s"]) * t,
                "targets": float(r["target_tokens"]),
            }
        )
    return steps


class _Counted:
    """Wraps a trainer's `compute_loss` (called in the training process once per micro
    batch, whatever runs the collator) to count each micro batch's tokens, target tokens and
    token slots (padding included)."""

    def __init__(self, compute_loss: Any) -> None:
        self.compute_loss = compute_loss
        self.batches: list[tuple[int, int, int]] = []

    def __call__(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        mask = inputs.get("attention_mask")
        ids = inputs["input_ids"]
        tokens = int(mask.sum()) if mask is not None else int(ids.numel())
        labels = inputs["labels"]
        self.batches.append((tokens, int((labels[:, 1:] != -100).sum()), int(ids.numel())))
        return self.compute_loss(model, inputs, *args, **kwargs)


def _peer(kind: str, job: Path, steps: int) -> list[dict[str, float]]:
    import torch
    from transformers import TrainerCallback, TrainingArguments

    from trainer.api import build_model
    from trainer.models.lora_linear import unfuse_lora_linears
    from trainer.models.patch_embed import conv_patch_embeddings
    from vlaunch_core.spec_load import load_spec

    spec = load_spec(job)
    micro, accum = int(spec.train.micro_batch_size), int(spec.train.grad_accum_steps)
    torch.manual_seed(0)
    built = build_model(spec, "fp32")
    model = built.model
    # as a Trainer + peft user runs it: peft's own LoRA Linear, transformers' Conv3d
    unfuse_lora_linears(model)
    conv_patch_embeddings(model)
    model.train()
    ends: list[float] = []

    class StepEnds(TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            ends.append(time.perf_counter())

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            ends.append(time.perf_counter())

    common: dict[str, Any] = {
        "output_dir": str(job.parent / "runs" / f"{kind}-{job.stem}"),
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": accum,
        "max_steps": steps,
        "learning_rate": 1e-4,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        # torch's fused AdamW, as vlaunch's: transformers' default since torch 2.8
        "optim": "adamw_torch_fused",
        "gradient_checkpointing": False,
        "logging_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": WORKERS,
        "use_cpu": True,
        # fp32 like the others: TRL's SFTConfig defaults to bf16 mixed precision (CPU
        # autocast here), which made its steps cheaper than the same work in fp32.
        "bf16": False,
        "fp16": False,
        "seed": 0,
        "train_sampling_strategy": "sequential",
    }
    if kind == "hf":
        collate, dataset = _hf_data(spec, built)
        from transformers import Trainer

        trainer: Any = Trainer(
            model=model,
            args=TrainingArguments(**common, remove_unused_columns=False),
            train_dataset=dataset,
            data_collator=collate,
            callbacks=[StepEnds()],
        )
    else:
        from trl import SFTConfig, SFTTrainer
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        processor = built.processor
        dataset = _trl_data(spec)
        collator = DataCollatorForVisionLanguageModeling(
            processor, max_length=MAX_LENGTH, completion_only_loss=True
        )
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common, max_length=MAX_LENGTH, completion_only_loss=True),
            train_dataset=dataset,
            processing_class=processor,
            data_collator=collator,
            callbacks=[StepEnds()],
        )
    counted = _Counted(trainer.compute_loss)
    trainer.compute_loss = counted
    trainer.train()
    out = []
    for k in range(steps):
        batches = counted.batches[k * accum : (k + 1) * accum]
        out.append(
            {
                "time": ends[k + 1] - ends[k],
                "tokens": float(sum(t for t, _, _ in batches)),
                "targets": float(sum(t for _, t, _ in batches)),
                "slots": float(sum(n for _, _, n in batches)),
            }
        )
    return out


def _hf_data(spec: Any, built: Any) -> tuple[Any, list[Any]]:
    """vlaunch's own encoding of every sample (ids, labels, pixels), and a padding collator."""
    from trainer.data.build import build_mixture
    from trainer.data.collate import Collator

    dataset = build_mixture(spec, "train", built.processor, built.family)
    items = [dataset[i] for i in range(len(dataset))]
    pad = built.processor.tokenizer.pad_token_id
    collator = Collator(int(pad), built.family)

    def collate(examples: list[Any]) -> dict[str, Any]:
        return dict(collator(examples).inputs)

    return collate, [e for e in items if e is not None]


def _trl_data(spec: Any) -> Any:
    """The samples as TRL's prompt-completion format with the images loaded."""
    from datasets import Dataset
    from PIL import Image

    entry = spec.data.datasets["instruct"]
    root = Path(entry.media_dir)
    rows = []
    for r in json.loads(Path(entry.data_path).read_text()):
        question = r["conversations"][0]["value"].replace("<image>\n", "")
        answer = r["conversations"][1]["value"]
        content: list[dict[str, Any]] = [{"type": "image"}] if "image" in r else []
        content.append({"type": "text", "text": question})
        rows.append(
            {
                "prompt": [{"role": "user", "content": content}],
                "completion": [
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]}
                ],
                "images": [Image.open(root / r["image"]).convert("RGB")] if "image" in r else [],
            }
        )
    return Dataset.from_list(rows)


def child(kind: str, job: Path, steps: int, out: Path) -> None:
    import torch

    torch.set_num_threads(THREADS)
    steps_out = _vlaunch(job) if kind.startswith("vlaunch") else _peer(kind, job, steps)
    out.write_text(json.dumps({"kind": kind, "steps": steps_out, "peak_rss": _hwm()}))


# --------------------------------------------------------------------------- driver


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    timed = [r["steps"][WARMUP:] for r in runs]
    n = min(len(t) for t in timed)
    per_step = [statistics.median(t[k]["time"] for t in timed) for k in range(n)]
    tokens = sum(s["tokens"] for s in timed[0][:n])
    targets = sum(s["targets"] for s in timed[0][:n])
    seconds = sum(per_step)
    slots = sum(s.get("slots", 0.0) for s in timed[0][:n])
    return {
        # the peers' micro batches as they reached the model (vlaunch's are not seen here)
        "padding_waste": round(1 - tokens / slots, 4) if slots else None,
        "tokens_per_s": round(tokens / seconds, 1),
        "target_tokens_per_s": round(targets / seconds, 1),
        "median_step_s": round(statistics.median(per_step), 3),
        "tokens_timed": int(tokens),
        "targets_timed": int(targets),
        "peak_rss": int(statistics.median(r["peak_rss"] for r in runs)),
        "runs": len(runs),
    }


PACKING_FAMILIES = ("qwen3_vl",)
"""Other M-RoPE families whose packing is timed against their own padded runs (vlaunch only:
the peers are compared on Qwen2.5-VL above)."""


def _compare(
    work: Path,
    jobs: dict[bool, Path],
    trainers: tuple[str, ...],
    repeats: int,
    steps: int,
    env: dict[str, str],
    tag: str,
) -> dict[str, Any]:
    """Run each trainer `repeats` times, alternating; rows and tokens/s ratios."""
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in trainers}
    for r in range(repeats):
        order = trainers if r % 2 == 0 else tuple(reversed(trainers))
        for kind in order:
            out = work / f"result-{tag}-{kind}.json"
            out.unlink(missing_ok=True)
            job = jobs[kind == "vlaunch+packing"]
            cmd = [str(BIN / "python"), "-m", "bench.peers", "--child", kind, str(job)]
            cmd += [str(steps), str(out)]
            proc = subprocess.run(
                cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
                )
            runs[kind].append(json.loads(out.read_text()))
    rows = {kind: _combine(runs[kind]) for kind in trainers}
    for kind, row in rows.items():
        row["trainer"] = LABELS[kind]
    peers: list[str] = [p for p in ("trl", "hf") if p in trainers] or ["vlaunch"]
    return {
        "rows": [rows[k] for k in trainers],
        "ratios": {
            f"{v} / {p}": round(rows[v]["tokens_per_s"] / rows[p]["tokens_per_s"], 3)
            for v in ("vlaunch+packing", "vlaunch")
            if v in rows
            for p in peers
            if v != p
        },
    }


def run(
    repeats: int = 3,
    steps: int = 10,
    tunings: tuple[str, ...] = ("lora", "full"),
    root: Path | None = None,
    packing_families: tuple[str, ...] = PACKING_FAMILIES,
    micro: int = MICRO,
) -> dict[str, Any]:
    root = root or BENCH_ROOT
    accum = accumulation(micro)
    work = root / "peers" / f"micro{micro}"
    model = small_vlm("qwen2_5_vl", HIDDEN, LAYERS, vocab=VOCAB, max_pixels=MAX_PIXELS, root=root)
    data = write_data(work, n=GLOBAL_BATCH * steps)
    check_image_tokens(model)
    env = bench_env(threads=THREADS)
    results: dict[str, Any] = {}
    for tuning in tunings:
        jobs = {
            packed: write_spec(spec_for(work, model, data, tuning, packed, steps, micro), work)
            for packed in (True, False)
        }
        results[tuning] = _compare(work, jobs, TRAINERS, repeats, steps, env, tuning)
    for family in packing_families:
        other = small_vlm(family, HIDDEN, LAYERS, vocab=VOCAB, max_pixels=MAX_PIXELS, root=root)
        check_image_tokens(other)
        folder = work / family
        folder.mkdir(parents=True, exist_ok=True)
        jobs = {
            packed: write_spec(spec_for(folder, other, data, "lora", packed, steps, micro), folder)
            for packed in (True, False)
        }
        label = f"lora, {family}-shaped (vlaunch packing vs padded)"
        results[label] = _compare(
            folder, jobs, ("vlaunch+packing", "vlaunch"), repeats, steps, env, family
        )
    return {
        "name": "peers" if micro == MICRO else f"peers_micro{micro}",
        "model": f"Qwen2.5-VL-shaped: tiny vision tower, decoder {HIDDEN} wide, {LAYERS} layers, "
        f"vocabulary {VOCAB} (the output layer's share of the decoder's weights per token is "
        f"Qwen2.5-VL-3B's, {HEAD_SHARE:.3f}) (random init), fp32, sdpa, no gradient checkpointing"
        + "".join(
            f"; the {f} rows: the same decoder size on {f}'s tiny tower" for f in packing_families
        ),
        "data": f"{GLOBAL_BATCH * steps} single-turn samples, LLaVA-1.5 mix lengths / {SCALE} "
        f"(88% one {IMAGE_PX[0]}x{IMAGE_PX[1]} px image = {IMAGE_TOKENS} image tokens, "
        "12% text only), "
        f"loss on the answers, max_length {MAX_LENGTH}, same order for all (no shuffling)",
        "batch": f"global {GLOBAL_BATCH} = micro {micro} x accumulation {accum}, 1 process, "
        f"{THREADS} thread, {steps} steps (first {WARMUP} not timed), AdamW, constant LR",
        "results": results,
        "versions": _versions(),
        "command": f"python -m bench.peers --repeats {repeats} --steps {steps} --micro {micro}",
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "peft", "trl")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--child", nargs=4, metavar=("KIND", "JOB", "STEPS", "OUT"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tuning", action="append", choices=["lora", "full"])
    parser.add_argument(
        "--micro", type=int, default=MICRO, help=f"micro batch (global {GLOBAL_BATCH})"
    )
    args = parser.parse_args(argv)
    if args.child:
        kind, job, steps, out = args.child
        child(kind, Path(job), int(steps), Path(out))
        return 0
    try:
        accumulation(args.micro)
    except ValueError as e:
        parser.error(str(e))
    result = run(args.repeats, args.steps, tuple(args.tuning or ("lora", "full")), micro=args.micro)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
