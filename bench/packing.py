"""Padding waste of micro-batches: random order, length-grouped, and packed.

The length mix imitates LLaVA-1.5's instruction mix (llava_v1_5_mix665k): 88% single-image
samples of 576 image tokens plus a log-normal text part (median 120 tokens), 12% text-only
conversations (log-normal, median 400 tokens), everything capped at 2048 tokens. Micro-batches
come from vlaunch's own sampler (`trainer.data.sampler.GlobalBatchSampler`), so grouping acts
within each global batch exactly as in training. Waste = padding slots / all token slots.

With `timing_steps > 0` (`--timing-steps N`) it also times forward + backward of a small
Llama decoder on CPU over the first micro-batches of training (the same samples in every
mode; lengths divided by 8): padded rows with an attention mask vs. one packed row with
per-sample position ids (what `data.packing` feeds the model). CPU timings are indicative
only; the waste is exact.
"""

from __future__ import annotations

import time
from typing import Any

IMAGE_TOKENS = 576
MAX_LENGTH = 2048


def length_mix(n: int, seed: int = 0) -> list[int]:
    """Token lengths, negative for text-only samples (the sampler's modality convention)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    text_only = rng.random(n) < 0.12
    image_text = np.clip(rng.lognormal(np.log(120), 0.9, n), 8, MAX_LENGTH - IMAGE_TOKENS)
    chat = np.clip(rng.lognormal(np.log(400), 1.0, n), 16, MAX_LENGTH)
    return [
        -int(c) if t else IMAGE_TOKENS + int(x)
        for t, x, c in zip(text_only, image_text, chat, strict=True)
    ]


def micro_batches(
    lengths: list[int], *, micro: int, world: int, accum: int, grouped: bool, seed: int
) -> list[list[int]]:
    """Micro-batch lengths in training order: step by step, all ranks of a step together."""
    from trainer.data.sampler import GlobalBatchSampler

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
        per_rank.append([[abs(lengths[i]) for i in batch] for batch in sampler])
    return [per_rank[r][k] for k in range(len(per_rank[0])) for r in range(world)]


def waste(batches: list[list[int]], packed: bool) -> dict[str, float]:
    tokens = sum(sum(b) for b in batches)
    slots = tokens if packed else sum(len(b) * max(b) for b in batches)
    return {"tokens": tokens, "slots": slots, "padding_waste": round(1 - tokens / slots, 4)}


def _timing(batches: list[list[int]], steps: int, packed: bool) -> dict[str, float]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )
    model = LlamaForCausalLM(config).train()
    model.config._attn_implementation = "sdpa"
    tokens = 0
    t0 = 0.0
    for k, full in enumerate(batches[: steps + 1]):
        if k == 1:  # the first micro-batch warms up
            tokens, t0 = 0, time.perf_counter()
        lengths = [max(2, n // 8) for n in full]
        if packed:
            ids = torch.randint(0, 512, (1, sum(lengths)))
            pos = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
            out = model(input_ids=ids, position_ids=pos, labels=ids, use_cache=False)
        else:
            width = max(lengths)
            ids = torch.randint(0, 512, (len(lengths), width))
            mask = torch.zeros_like(ids)
            for r, n in enumerate(lengths):
                mask[r, :n] = 1
            out = model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False)
        out.loss.backward()
        tokens += sum(lengths)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "real_tokens_per_s": round(tokens / seconds, 1)}


def run(
    num_samples: int = 8192,
    micro_batch_size: int = 4,
    world_size: int = 8,
    grad_accum: int = 4,
    seed: int = 0,
    timing_steps: int = 0,
) -> dict[str, Any]:
    """Padding waste (and optionally CPU step time) for random, grouped and packed batches."""
    lengths = length_mix(num_samples, seed)
    common = {"micro": micro_batch_size, "world": world_size, "accum": grad_accum, "seed": seed}
    random_batches = micro_batches(lengths, grouped=False, **common)
    grouped_batches = micro_batches(lengths, grouped=True, **common)
    rows = [
        {"batching": "random order, padded", **waste(random_batches, packed=False)},
        {"batching": "group_by_length, padded", **waste(grouped_batches, packed=False)},
        {"batching": "packing (one row per micro-batch)", **waste(random_batches, packed=True)},
    ]
    if timing_steps > 0:
        rows[0]["cpu_step"] = _timing(random_batches, timing_steps, packed=False)
        rows[1]["cpu_step"] = _timing(grouped_batches, timing_steps, packed=False)
        rows[2]["cpu_step"] = _timing(random_batches, timing_steps, packed=True)
    texts = [n for n in lengths if n < 0]
    return {
        "name": "packing",
        "length_mix": {
            "samples": num_samples,
            "text_only": len(texts),
            "mean_tokens": round(sum(abs(n) for n in lengths) / num_samples, 1),
            "max_tokens": max(abs(n) for n in lengths),
            "model": "LLaVA-1.5 mix: 576 image tokens + log-normal text (median 120); 12% "
            "text-only (median 400); cap 2048",
        },
        "batch": {
            "micro_batch_size": micro_batch_size,
            "world_size": world_size,
            "grad_accum": grad_accum,
            "global_batch_size": micro_batch_size * world_size * grad_accum,
        },
        "rows": rows,
        "command": "python -m bench.packing",
    }


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument(
        "--timing-steps",
        type=int,
        default=0,
        help="also time this many micro-batches on CPU (indicative only)",
    )
    args = parser.parse_args()
    print(
        json.dumps(
            run(args.samples, args.micro_batch_size, timing_steps=args.timing_steps), indent=2
        )
    )


if __name__ == "__main__":
    main()
