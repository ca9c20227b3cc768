"""What the causal mask of one packed row costs: transformers' `sdpa` against vlaunch's packed sdpa.

For a packed row, transformers' `create_causal_mask` builds a [tokens x tokens] boolean block
mask for `sdpa`; vlaunch's per-sample attention (`trainer.models.packed_attention`) never reads
it, and its mask function builds none. Each (attention, row length) runs in a fresh process
(`--child`) that calls `create_causal_mask` as a decoder's forward does (a Qwen2-VL-shaped
text config; samples of 1,000 tokens), and reports:

- `ms`: the call's wall time, median of `--repeats` calls;
- `mask MiB`: the size of what it returns (held by the forward until its end);
- `peak MiB`: the process's high-water mark during the calls (`/proc/self/clear_refs`, then
  `VmHWM`) minus its RSS before them: the mask and what building it takes.

    python -m bench.packed_mask                  # lengths 4096, 16384, 32768
    python -m bench.packed_mask --lengths 8192 --repeats 5

Hand-run (not part of `make bench`); docs/benchmarks.md has its numbers and command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, bench_env, proc_status_bytes

ATTENTIONS = ("sdpa", "vlaunch_packed_sdpa")
LENGTHS = (4096, 16384, 32768)
SAMPLE = 1000
MIB = 1024 * 1024


def child(attention: str, length: int, repeats: int) -> dict[str, Any]:
    """The measurement, in this process."""
    import torch
    from transformers import Qwen2VLTextConfig
    from transformers.masking_utils import create_causal_mask

    from trainer.models.packed_attention import register

    register()
    config = Qwen2VLTextConfig(hidden_size=16, num_attention_heads=2, num_hidden_layers=1)
    config._attn_implementation = attention
    embeds = torch.zeros(1, length, 16)
    positions = (torch.arange(length) % SAMPLE)[None]  # samples of SAMPLE tokens
    Path("/proc/self/clear_refs").write_text("5")
    before = proc_status_bytes("VmRSS")
    times, mask = [], None
    for _ in range(repeats):
        mask = None
        start = time.perf_counter()
        mask = create_causal_mask(config, embeds, None, cache=None, position_ids=positions)
        times.append(time.perf_counter() - start)
    peak = proc_status_bytes("VmHWM") - before
    held = 0 if mask is None else mask.numel() * mask.element_size()
    return {
        "attention": attention,
        "length": length,
        "ms": round(statistics.median(times) * 1000, 1),
        "mask_mib": round(held / MIB, 1),
        "peak_mib": round(max(peak, 0) / MIB, 1),
    }


def measure(lengths: tuple[int, ...] = LENGTHS, repeats: int = 3) -> list[dict[str, Any]]:
    """One fresh process per (length, attention), the attentions alternating."""
    rows = []
    for length in lengths:
        for attention in ATTENTIONS:
            cmd = [sys.executable, "-m", "bench.packed_mask", "--child", attention]
            cmd += ["--lengths", str(length), "--repeats", str(repeats)]
            out = subprocess.run(
                cmd, cwd=REPO, env=bench_env(), capture_output=True, text=True, check=True
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| attention | row (tokens) | ms | mask MiB | peak MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['attention']} | {r['length']:,} | {r['ms']} | {r['mask_mib']} | "
            f"{r['peak_mib']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=ATTENTIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.lengths[0], args.repeats)))
        return 0
    print(table(measure(tuple(args.lengths), args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
