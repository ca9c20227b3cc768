"""Padding waste and tokens/s of micro-batches: random order, length-grouped, and packed.

Two length mixes (token counts per sample, image tokens included, cap 2048):

- `llava-1.5`: LLaVA-1.5's instruction mix (llava_v1_5_mix665k): 88% one image of 576 tokens
  plus a log-normal text part (median 120), 12% text-only conversations (median 400);
- `diverse`: 30% short captions (one image + median 24 text tokens), 48% single-image
  instructions and multi-turn chats (median 150), 10% multi-image samples (2-3 images of
  576 tokens + median 120), 12% text-only conversations (median 400).

Micro-batches come from vlaunch's own sampler (`vlaunch_core.data.sampler.GlobalBatchSampler`), so
grouping acts within each global batch exactly as in training. Two wastes per batching:

- padding waste = padding slots / all token slots;
- with rank imbalance: under DDP every rank waits for the slowest at each optimizer step, so
  a step costs `world x` the largest per-rank slot count; waste = 1 - tokens / that cost.
  Packing removes padding but not imbalance (a packed row is as long as its samples).

`train_steps > 0` also trains a small LLaVA with each batching and reports the loop's own
tokens/s (`bench.packing_train`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

IMAGE_TOKENS = 576
MAX_LENGTH = 2048
MIXES = {
    "llava-1.5": "LLaVA-1.5 mix: 88% 576 image tokens + log-normal text (median 120); 12% "
    "text-only (median 400); cap 2048",
    "diverse": "30% captions (1 image + median 24 text tokens), 48% single-image instructions "
    "and chats (median 150), 10% multi-image (2-3 images + median 120), 12% text-only "
    "(median 400); 576 tokens per image; cap 2048",
}


def length_mix(n: int, seed: int = 0, mix: str = "llava-1.5") -> list[int]:
    """Token lengths, negative for text-only samples (the sampler's modality convention)."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def text(median: float, sigma: float) -> np.ndarray:
        return np.asarray(rng.lognormal(np.log(median), sigma, n))

    chat = np.clip(text(400, 1.0), 16, MAX_LENGTH).astype(int)
    if mix == "llava-1.5":
        text_only = rng.random(n) < 0.12
        image_text = np.clip(text(120, 0.9), 8, MAX_LENGTH - IMAGE_TOKENS).astype(int)
        return [
            -int(c) if t else IMAGE_TOKENS + int(x)
            for t, x, c in zip(text_only, image_text, chat, strict=True)
        ]
    if mix != "diverse":
        raise ValueError(f"unknown mix {mix!r}; expected one of {sorted(MIXES)}")
    kind = rng.choice(4, size=n, p=[0.30, 0.48, 0.10, 0.12])
    images = np.where(kind == 2, rng.integers(2, 4, n), 1)
    text_part = np.select(
        [kind == 0, kind == 1, kind == 2],
        [text(24, 0.5), text(150, 0.9), text(120, 0.8)],
        default=0,
    )
    out = []
    for k, m, t, c in zip(kind, images, text_part, chat, strict=True):
        if k == 3:
            out.append(-int(c))
        else:
            out.append(int(min(MAX_LENGTH, m * IMAGE_TOKENS + max(8, int(t)))))
    return out


def sampler_batches(
    lengths: list[int], *, micro: int, world: int, accum: int, grouped: bool, seed: int
) -> list[list[int]]:
    """Sample indices of the micro-batches in training order: step by step, all ranks of a
    step together (entry `(s * accum + k) * world + r` is rank r's k-th micro-batch of step s)."""
    from vlaunch_core.data.sampler import GlobalBatchSampler

    per_rank = []
    for rank in range(world):
        sampler = GlobalBatchSampler(
            len(lengths),
            global_batch_size=micro * world * accum,
            micro_batch_size=micro,
            rank=rank,
            world_size=world,
            seed=seed,
            group_by_length=grouped,
            lengths=lengths,
        )
        per_rank.append([list(batch) for batch in sampler])
    return [per_rank[r][k] for k in range(len(per_rank[0])) for r in range(world)]


def micro_batches(
    lengths: list[int], *, micro: int, world: int, accum: int, grouped: bool, seed: int
) -> list[list[int]]:
    """Token lengths of the micro-batches in training order (see `sampler_batches`)."""
    batches = sampler_batches(
        lengths, micro=micro, world=world, accum=accum, grouped=grouped, seed=seed
    )
    return [[abs(lengths[i]) for i in batch] for batch in batches]


def slots(batch: list[int], packed: bool) -> int:
    """Token slots a micro-batch computes: its tokens packed, rows x longest row padded."""
    return sum(batch) if packed else len(batch) * max(batch)


def waste(batches: list[list[int]], packed: bool, *, world: int, accum: int) -> dict[str, Any]:
    tokens = sum(sum(b) for b in batches)
    total = sum(slots(b, packed) for b in batches)
    step = world * accum
    balanced = 0
    for s in range(0, len(batches), step):
        group = batches[s : s + step]
        per_rank = [
            sum(slots(group[k * world + r], packed) for k in range(accum)) for r in range(world)
        ]
        balanced += world * max(per_rank)
    return {
        "tokens": tokens,
        "slots": total,
        "padding_waste": round(1 - tokens / total, 4),
        "waste_with_rank_imbalance": round(1 - tokens / balanced, 4),
    }


BATCHINGS: dict[str, tuple[bool, bool]] = {
    # label: (group_by_length, packing)
    "random order, padded": (False, False),
    "group_by_length, padded": (True, False),
    "packing (one row per micro-batch)": (False, True),
}


def analyse(
    mix: str, *, num_samples: int, micro: int, world: int, accum: int, seed: int
) -> dict[str, Any]:
    """Padding waste of each batching on one length mix."""
    lengths = length_mix(num_samples, seed, mix)
    common = {"micro": micro, "world": world, "accum": accum, "seed": seed}
    batches = {
        grouped: micro_batches(lengths, grouped=grouped, **common) for grouped in (False, True)
    }
    rows = [
        {"batching": label, **waste(batches[grouped], packed, world=world, accum=accum)}
        for label, (grouped, packed) in BATCHINGS.items()
    ]
    return {
        "mix": mix,
        "description": MIXES[mix],
        "samples": num_samples,
        "text_only": sum(1 for n in lengths if n < 0),
        "mean_tokens": round(sum(abs(n) for n in lengths) / num_samples, 1),
        "max_tokens": max(abs(n) for n in lengths),
        "rows": rows,
    }


def run(
    num_samples: int = 8192,
    micro_batch_size: int = 4,
    world_size: int = 8,
    grad_accum: int = 4,
    seed: int = 0,
    train_steps: int = 0,
    train_warmup: int = 2,
    train_repeats: int = 3,
    train_samples: int = 512,
    root: Path | None = None,
) -> dict[str, Any]:
    """Padding waste on both mixes; with `train_steps`, tokens/s of real CPU training steps."""
    out: dict[str, Any] = {
        "name": "packing",
        "batch": {
            "micro_batch_size": micro_batch_size,
            "world_size": world_size,
            "grad_accum": grad_accum,
            "global_batch_size": micro_batch_size * world_size * grad_accum,
        },
        "mixes": [
            analyse(
                mix,
                num_samples=num_samples,
                micro=micro_batch_size,
                world=world_size,
                accum=grad_accum,
                seed=seed,
            )
            for mix in MIXES
        ],
        "command": "python -m bench.packing",
    }
    if train_steps > 0:
        from bench.packing_train import train_tokens_per_s

        out["training"] = train_tokens_per_s(
            steps=train_steps,
            warmup=train_warmup,
            repeats=train_repeats,
            num_samples=train_samples,
            root=root,
        )
        out["command"] += f" --train-steps {train_steps} --train-repeats {train_repeats}"
    return out


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="also train a small LLaVA this many steps per batching on CPU and report tokens/s",
    )
    parser.add_argument("--train-repeats", type=int, default=3, help="runs per batching")
    args = parser.parse_args()
    result = run(
        args.samples,
        args.micro_batch_size,
        train_steps=args.train_steps,
        train_repeats=args.train_repeats,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
