"""Markdown tables of benchmark results, written between marker comments of a page.

A generated block sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; everything
outside the markers (hand-written prose, other engineers' sections) is kept as it is. A block
whose markers are missing is appended at the end of the page under its own heading.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GIB = 1024**3


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _s(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


BUSY_LOAD = 1.0
"""A 1-minute load average above this before a benchmark: other work was competing."""


def measured_on(result: dict[str, Any], machine: dict[str, Any]) -> str:
    """The line under every table: hardware, load, command, repetitions."""
    load = result.get("load_average") or {}
    before = load.get("before")
    after = load.get("after")
    load_text = (
        f"load average {before[0]:.2f} before, {after[0]:.2f} after"
        if before and after
        else "load average not recorded"
    )
    busy = (
        f" **The load average before was above {BUSY_LOAD}: other work competed for the "
        "cores, so these timings are noisier than on an idle machine.**"
        if before and before[0] > BUSY_LOAD
        else ""
    )
    return (
        f"Measured on {machine.get('cpu')} ({machine.get('cores')} cores, "
        f"{machine.get('memory_gib')} GiB RAM, no GPU), {load_text}; "
        f"`{result.get('command')}` (part of `make bench`), {result.get('date', '')}.{busy}"
    )


# --------------------------------------------------------------------------- per benchmark


def cli_latency(r: dict[str, Any]) -> str:
    rows = []
    for row in r["rows"]:
        if "error" in row:
            rows.append([f"`{row['command']}`", "error: " + row["error"], "-", "-", "-"])
            continue
        rows.append(
            [
                f"`{row['command']}`",
                _s(row["median"]),
                f"{_s(row['min'])} - {_s(row['max'])}",
                f"< {row['target_s']}",
                "yes" if row["meets_target"] else "**no**",
            ]
        )
    runs = r["rows"][0].get("runs", "?") if r["rows"] else "?"
    return (
        table(["command", "median (s)", "min - max (s)", "target (s)", "met"], rows)
        + f"\n\nWall time of the whole process, median of {runs} runs after one warm-up run."
    )


def ray_overhead(r: dict[str, Any]) -> str:
    setup = r["setup"]
    rows = []
    for mode, label in (
        ("torchrun", "torchrun, plain loop"),
        ("ray", "`vlaunch local`, Ray Train"),
    ):
        m = r["modes"][mode]
        spread = m.get("median_step_s_spread") or {}
        rows.append(
            [
                label,
                _s(m["median_step_s"]),
                f"{_s(spread.get('min'))} - {_s(spread.get('max'))}",
                _s(m["mean_step_s"]),
                _s(m["first_step_s"], 1),
                _s(m["wall_s"], 1),
            ]
        )
    ratio = r["step_time_ratio"]
    verdict = "met" if r["meets_target"] else "**not met**"
    return (
        table(
            [
                "host",
                "median step (s)",
                "runs' medians, min - max (s)",
                "mean step (s)",
                "launch to first step done (s)",
                "whole run (s)",
            ],
            rows,
        )
        + f"\n\nSteady-state step time Ray / torchrun: **{ratio:.3f}** (median steps; "
        f"{r['mean_step_time_ratio']:.3f} on mean steps); target <= {r['target_ratio']}: "
        f"{verdict}. {setup['ranks']} ranks, {_ranks(r.get('ranks'))}. Global batch "
        f"{setup['global_batch_size']} (micro {setup['micro_batch_size']}), {setup['steps']} "
        f"steps of which the first {setup['warmup_steps_skipped']} are skipped; medians over "
        f"{setup['repeats']} runs of each, the order alternating. Model: {setup['model']}. "
        f"Commands: `{r['commands']['torchrun']}` and `{r['commands']['ray']}`."
    )


def _ranks(ranks: list[dict[str, Any]] | None) -> str:
    """What every rank ran with, as `bench/rank_probe` recorded it (the same on both hosts)."""
    if not ranks:
        return "threads per rank not recorded"
    kinds = {
        (r["torch_threads"], r["interop_threads"], r["env"].get("OMP_NUM_THREADS")) for r in ranks
    }
    text = "; ".join(
        f"{intra} intra-op and {inter} inter-op torch threads (OMP_NUM_THREADS={omp})"
        for intra, inter, omp in sorted(kinds, key=str)
    )
    return f"each with {text} under both hosts, as recorded in every run by `bench/rank_probe`"


def packing(r: dict[str, Any]) -> str:
    b = r["batch"]
    parts = []
    for mix in r["mixes"]:
        rows = [
            [
                row["batching"],
                _pct(row["padding_waste"]),
                _pct(row["waste_with_rank_imbalance"]),
            ]
            for row in mix["rows"]
        ]
        parts.append(
            f"**{mix['mix']}** ({mix['description']}; {mix['samples']} samples, mean "
            f"{mix['mean_tokens']} tokens):\n\n"
            + table(["batching", "padding waste", "waste incl. rank imbalance"], rows)
        )
    text = "\n\n".join(parts) + (
        f"\n\nMicro-batch {b['micro_batch_size']}, {b['world_size']} ranks, accumulation "
        f"{b['grad_accum']} (global batch {b['global_batch_size']}), vlaunch's own sampler. "
        "Exact counts (no timing, nothing random left after the seed)."
    )
    training = r.get("training")
    if training:
        rows = [
            [
                row["batching"],
                _pct(row["padding_waste"]),
                row["tokens_timed"],
                _s(row["tokens_per_s"], 0),
                _s(row["step_time_s"]),
                f"{row['speedup']:.2f}x",
            ]
            for row in training["rows"]
        ]
        text += (
            "\n\nReal training steps on CPU. Every batching trains the same samples at every "
            "step, so the timed steps hold the same real tokens; each step's time is the "
            f"median over {training['rows'][0]['runs']} runs (the runs alternate between "
            "batchings), and tokens/s = real tokens (padding excluded) / the sum of those "
            "step times:\n\n"
            + table(
                [
                    "batching",
                    "padding waste",
                    "real tokens timed",
                    "tokens/s",
                    "median step (s)",
                    "vs random",
                ],
                rows,
            )
            + f"\n\nModel: {training['model']}. Data: {training['data']}. Batch: "
            f"{training['batch']}, {training['steps']} steps (first "
            f"{training['warmup_steps_skipped']} skipped)."
        )
    else:
        text += (
            "\n\nReal training steps: not measured in this run (`python -m bench.packing "
            "--train-steps N` measures them; `make bench` does)."
        )
    return text


def data_pipeline(r: dict[str, Any]) -> str:
    rows = []
    for row in r["rows"]:
        rows.append(
            [
                row["media"],
                row["preprocessing"],
                row["workers"],
                _s(row["tokens_per_sample"], 0),
                _s(row["samples_per_s"], 1),
                _s(row["trainer_samples_per_s"], 1),
                "-" if row["ratio"] is None else f"{row['ratio']:.2f}",
            ]
        )
    media, setup, first = r["media"], r["setup"], r["rows"][0]
    threads = first.get("trainer_threads", "?")
    return (
        table(
            [
                "media",
                "preprocessing",
                "loader workers",
                "tokens/sample",
                "loader samples/s",
                "trainer samples/s",
                "loader / trainer",
            ],
            rows,
        )
        + f"\n\nImages: {media['images']}. Videos: {media['videos']}. Trainer: "
        f"{setup['model']}, {setup['batch']}, {setup['workers']}, {threads} math thread(s) "
        "(the cores the loader workers leave free). Loader: median of "
        f"{first['runs']} passes of {setup['loader_batches_timed']} micro-batches after an "
        f"untimed first one; trainer: median of the steps after the first "
        f"{setup.get('trainer_warmup_steps_skipped', '?')} of {setup.get('trainer_steps', '?')}, "
        f"median over {first.get('trainer_runs', '?')} runs."
    )


def data_sources(r: dict[str, Any]) -> str:
    rows = [
        [
            row["mixture"],
            f"{row['samples']:,}",
            _s(row["startup_s"], 2),
            row["workers"],
            _s(row["samples_per_s"], 1),
            _s(row["trainer_samples_per_s"], 1),
            f"{row['ratio']:.2f}",
            row["rss_rank_mib"],
            row["rss_worker_mib"],
        ]
        for row in r["rows"]
    ]
    s = r["setup"]
    return (
        table(
            [
                "mixture",
                "samples",
                "startup (s)",
                "loader workers",
                "loader samples/s",
                "trainer samples/s",
                "loader / trainer",
                "peak RSS rank (MiB)",
                "peak RSS worker (MiB)",
            ],
            rows,
        )
        + f"\n\nSamples: {s['samples']}; {s['image']}. Parquet: {s['parquet']}, JPEG bytes "
        f"embedded. Tar: {s['tar']}. JSON: JSON Lines, one image file per sample. Trainer: "
        f"{s['model']}, {s['batch']}, `data.num_workers: auto`. Loader: {s['loader']}; "
        f"trainer: {s['trainer']}. Startup: `build_train_data` (the JSON index pass checks "
        "every image file; Parquet and tar are counted from footers and the wids index). Peak "
        "RSS: `getrusage` of the rank process, and of its largest loader worker."
    )


def _mib(x: float) -> str:
    return f"{x / 2**20:,.0f}"


def loss_memory(r: dict[str, Any]) -> str:
    rows = [
        [
            row["variant"],
            row["loss_kind"],
            _mib(row["process_peak"]),
            _mib(row["step_growth"]),
            f"{row['loss']:.4f}",
            row["runs"],
        ]
        for row in r["rows"]
    ]
    return (
        table(
            [
                "train.loss",
                "loss used",
                "process peak RSS (MiB)",
                "step growth (MiB)",
                "loss of the last step",
                "runs",
            ],
            rows,
        )
        + f"\n\nModel: {r['model']}. Batch: {r['batch']}. Chunked / plain: process peak "
        f"{r['ratio_process_peak']:.2f}, growth during the steps {r['ratio_step_growth']:.2f}. "
        "Peak RSS: the process's kernel high-water mark (VmHWM); step growth: the high-water "
        "mark of the steps (reset after setup) minus the RSS when they started."
    )


def peers(r: dict[str, Any]) -> str:
    parts = []
    for tuning, res in r["results"].items():
        rows = [
            [
                row["trainer"],
                _s(row["tokens_per_s"], 1),
                _s(row["target_tokens_per_s"], 1),
                _s(row["median_step_s"], 2),
                _mib(row["peak_rss"]),
                _waste(row),
                row["runs"],
            ]
            for row in res["rows"]
        ]
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in res["ratios"].items())
        parts.append(
            f"**{tuning}**\n\n"
            + table(
                [
                    "trainer",
                    "tokens/s",
                    "target tokens/s",
                    "median step (s)",
                    "peak RSS (MiB)",
                    "padding waste",
                    "runs",
                ],
                rows,
            )
            + f"\n\ntokens/s ratios: {ratios}"
        )
    versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
    return (
        "\n\n".join(parts)
        + f"\n\nModel: {r['model']}. Data: {r['data']}. Batch: {r['batch']}. Versions: "
        f"{versions}. tokens/s counts every token but padding; target tokens carry a loss. "
        "Padding waste: the share of the timed steps' token slots that are padding, counted in "
        "the peers' runs as their micro batches reach the model; vlaunch packed is one row "
        "without padding; vlaunch padded batches the same samples as the transformers Trainer "
        "with the same collator (vlaunch's), so its waste is that row's."
    )


def _waste(row: dict[str, Any]) -> str:
    if row.get("padding_waste") is not None:
        return f"{100 * row['padding_waste']:.1f}%"
    return "0%" if "packing" in row["trainer"] else "-"


def gpu(r: dict[str, Any] | None) -> str:
    if r is None or r.get("tiny") or r.get("device") == "cpu":
        return (
            "**Not yet measured.** No GPU was lent to the session that wrote this page; "
            "`python -m bench.gpu` has only run on CPU with tiny models (`--device cpu --tiny`, "
            "tests/bench/test_gpu.py), so there are no GPU numbers here yet. On a GPU machine: "
            "`python -m bench.gpu --out bench/results/gpu.json`, then `python -m bench.run_cpu "
            "--doc-only` to fill this table."
        )
    rows = []
    for row in r["rows"]:
        if "error" in row and "step_time_s" not in row:
            rows.append(
                [row["config"], row.get("trainer", "-"), row.get("loss", "-")]
                + ["error: " + row["error"][:80]]
                + ["-"] * 6
            )
            continue
        pred = (row.get("predicted") or {}).get("total")
        meas = row.get("measured") or {}
        device_peak = (meas.get("reserved") or 0) + (meas.get("context") or 0)
        rows.append(
            [
                row["config"],
                row["trainer"],
                row.get("loss", "-"),
                _s(row["tokens_per_s"], 0),
                _pct(row.get("mfu")),
                _s((meas.get("allocated") or 0) / GIB, 1),
                _s(device_peak / GIB, 1),
                _s(pred / GIB, 1) if pred else "-",
                _pct(row.get("memory_error")),
                row["step_time_s"],
            ]
        )
    return (
        table(
            [
                "configuration",
                "trainer",
                "loss",
                "tokens/s",
                "MFU",
                "peak allocated (GiB)",
                "peak reserved + context (GiB)",
                "predicted (GiB)",
                "prediction error",
                "step (s)",
            ],
            rows,
        )
        + f"\n\nDevice: {r['device']}; `{r['command']}`; median of {r['steps']} steps after "
        f"{r['warmup_steps_skipped']} warm-up steps."
        + "".join(f"\n\n{line}" for line in loss_memory_ratios(r["rows"]))
    )


def loss_memory_ratios(rows: list[dict[str, Any]]) -> list[str]:
    """For each configuration also run as `<name> loss=plain`: the peak allocated memory of
    vlaunch's step with every other loss of that configuration against the plain loss's."""
    mine = {
        row["config"]: row
        for row in rows
        if row.get("trainer") == "vlaunch loop" and (row.get("measured") or {}).get("allocated")
    }
    out = []
    for name, plain in mine.items():
        if not name.endswith(" loss=plain"):
            continue
        base = name.removesuffix(" loss=plain")
        others = [
            (row.get("loss", "?"), row["measured"]["allocated"] / plain["measured"]["allocated"])
            for other, row in mine.items()
            if other != name and (other == base or other.startswith(base + " loss="))
        ]
        if others:
            parts = ", ".join(f"{loss} {ratio:.2f}" for loss, ratio in others)
            out.append(f"Peak allocated against the plain loss (full logits), {base}: {parts}.")
    return out


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "cli_latency": cli_latency,
    "ray_overhead": ray_overhead,
    "packing": packing,
    "data_pipeline": data_pipeline,
    "data_sources": data_sources,
    "loss_memory": loss_memory,
    "peers": peers,
    "peers_micro16": peers,
}
TITLES = {
    "cli_latency": "CLI latency",
    "ray_overhead": "Ray overhead",
    "packing": "Packing and grouping",
    "data_pipeline": "Data pipeline",
    "data_sources": "Data sources",
    "loss_memory": "The loss without full logits",
    "peers": "Side by side: TRL SFTTrainer and transformers Trainer + peft",
    "peers_micro16": "Side by side at LLaVA-1.5's micro batch (16)",
    "gpu": "GPU",
}


def blocks(results: dict[str, Any], gpu_results: dict[str, Any] | None) -> dict[str, str]:
    """Markdown of every block: one per CPU benchmark (its table, or why there is none), and
    the GPU one."""
    out = {}
    for name, render in RENDERERS.items():
        result = results["benchmarks"].get(name)
        if result is None:
            out[name] = (
                "**Not yet measured** with the current code: `make bench` (or `python -m "
                f"bench.run_cpu --only {name}`) fills this table."
            )
        elif "error" in result:
            out[name] = f"**Failed in the last run:** `{result['error'][:300]}`"
        else:
            out[name] = render(result) + "\n\n" + measured_on(result, results["machine"])
    out["gpu"] = gpu(gpu_results)
    return out


def update_page(path: Path, new_blocks: dict[str, str]) -> str:
    """Replace each block between its markers; return the new text (also written)."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    for name, body in new_blocks.items():
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
        block = f"{start}\n{body.strip()}\n{end}"
        found = pattern.search(text)
        if found:
            text = text[: found.start()] + block + text[found.end() :]
        else:
            text = text.rstrip("\n") + f"\n\n## {TITLES.get(name, name)}\n\n{block}\n"
    path.write_text(text)
    return text
