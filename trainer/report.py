"""`vlaunch report`: one page about a run, from the files in its directory.

Reads `metrics.jsonl` (loss, learning rate, throughput, measured peak memory on GPUs),
`plan.json` (batch and the memory prediction), `tuning.json`, `eval.json`, `status.json` and
`spec.yaml`, draws the curves with matplotlib (Agg, no display) and writes HTML (PNGs
embedded as data URIs: one self-contained file) or Markdown (PNGs written next to it).
Nothing is loaded onto a device; the run may still be going.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlaunch_core.errors import UserError

Format = Literal["html", "md"]
GIB = 1024**3


@dataclass
class Figure:
    name: str
    title: str
    png: bytes


@dataclass
class Section:
    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    """Key-value rows."""
    table: tuple[list[str], list[list[str]]] | None = None
    """A table: header and rows."""
    note: str | None = None


@dataclass
class Report:
    title: str
    figures: list[Figure]
    sections: list[Section]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None


def build_report(run: Path) -> Report:
    """Everything the page shows; raises a UserError when `run` is not a run directory."""
    from trainer.metrics import read_metrics

    run = run.expanduser().absolute()
    if not (run / "spec.yaml").is_file() and not (run / "metrics.jsonl").is_file():
        raise UserError(
            f"{run}: not a run directory (no spec.yaml or metrics.jsonl)",
            hint="give <output.dir>/<name> of a run",
        )
    records = read_metrics(run / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    status = _json(run / "status.json") or {}
    plan = _json(run / "plan.json") or {}
    figures = _figures(train, evals)
    sections = [
        _summary(run, status),
        _plan(plan, train),
        _throughput(train),
        *_evaluation(_json(run / "eval.json") or {}),
        _tuning(_json(run / "tuning.json")),
        _files(run),
    ]
    return Report(f"Run report: {run.name}", figures, [s for s in sections if s is not None])


# --------------------------------------------------------------------------- figures


def _figures(train: list[dict[str, Any]], evals: list[dict[str, Any]]) -> list[Figure]:
    def series(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
        return [
            (float(r["step"]), float(r[key]))
            for r in rows
            if isinstance(r.get(key), int | float) and isinstance(r.get("step"), int | float)
        ]

    out: list[Figure] = []
    loss = series(train, "loss")
    if loss:
        out.append(
            Figure(
                "loss",
                "Loss",
                _plot(
                    [("train loss", loss, "-"), ("held-out loss", series(evals, "loss"), "o-")],
                    "loss (mean over target tokens)",
                ),
            )
        )
    lr = series(train, "lr")
    if lr:
        out.append(Figure("lr", "Learning rate", _plot([("learning rate", lr, "-")], "lr")))
    tps = series(train, "tokens_per_s")
    if tps:
        out.append(
            Figure("throughput", "Throughput", _plot([("tokens/s", tps, "-")], "tokens / s"))
        )
    return out


def _plot(lines: list[tuple[str, list[tuple[float, float]], str]], ylabel: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    try:
        for label, points, style in lines:
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, label=label, linewidth=1.4, markersize=4)
        ys_all = [y for _, points, _ in lines for _, y in points]
        if min(ys_all) > 0 and max(ys_all) / min(ys_all) > 30:
            ax.set_yscale("log")  # a loss from 6 down to 0.03 reads better on a log scale
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------- sections


def _summary(run: Path, status: dict[str, Any]) -> Section:
    from trainer.trained import read_spec

    rows = [("run directory", str(run))]
    if (run / "spec.yaml").is_file():
        spec = read_spec(run / "spec.yaml")
        rows += [
            ("model", spec.model.name_or_path),
            ("data", spec.data.mixture),
            ("held-out data", spec.data.eval_mixture or "-"),
            ("tuning preset", str(spec.tuning.preset)),
            ("strategy / precision", f"{spec.train.strategy} / {spec.train.precision}"),
        ]
        if spec.model.adapter:
            rows.append(("continued from", str(spec.model.adapter)))
    if status:
        step = status.get("step")
        total = status.get("total_steps")
        rows.append(("status", f"{status.get('state', '?')} at step {step}/{total or '?'}"))
        if status.get("error"):
            rows.append(("error", str(status["error"])[:300]))
        if status.get("updated"):
            rows.append(("updated", str(status["updated"])))
    return Section("Run", rows)


def _plan(plan: dict[str, Any], train: list[dict[str, Any]]) -> Section | None:
    if not plan:
        return None
    rows = [
        (
            "global batch",
            f"{plan.get('global_batch_size')} = micro {plan.get('micro_batch_size')} x "
            f"accumulation {plan.get('grad_accum_steps')} x world {plan.get('world_size')}",
        ),
        ("devices", f"{plan.get('nodes')} node(s) x {plan.get('gpus_per_node')}"),
        ("profile / precision", f"{plan.get('profile')} / {plan.get('precision')}"),
    ]
    memory = plan.get("memory") or {}
    if memory:
        parts = ", ".join(
            f"{k} {_gib(v)}" for k, v in (memory.get("parts_bytes") or {}).items() if v
        )
        rows.append(("predicted peak per device", f"{_gib(memory.get('total_bytes'))} ({parts})"))
        rows.append(("usable device memory", _gib(memory.get("usable_bytes"))))
    peaks = [
        float(r["peak_mem_gib"]) for r in train if isinstance(r.get("peak_mem_gib"), int | float)
    ]
    if peaks:
        measured = max(peaks)
        rows.append(("measured peak (rank 0)", f"{measured:.2f} GiB"))
        total = memory.get("total_bytes")
        if total:
            rows.append(("measured / predicted", f"{measured * GIB / total:.2f}"))
    else:
        rows.append(("measured peak", "not recorded (CPU run: no device memory counter)"))
    notes = plan.get("notes") or []
    return Section("Plan", rows, note="; ".join(map(str, notes)) or None)


def _throughput(train: list[dict[str, Any]]) -> Section | None:
    def values(key: str) -> list[float]:
        return [float(r[key]) for r in train if isinstance(r.get(key), int | float)]

    steps = values("step_time_s")
    if not steps:
        return None
    rows = [("steps logged", str(len(train)))]
    for key, label, fmt in (
        ("tokens_per_s", "tokens / s (median)", "{:,.0f}"),
        ("samples_per_s", "samples / s (median)", "{:,.1f}"),
        ("step_time_s", "step time (median)", "{:.3f} s"),
    ):
        v = values(key)
        if v:
            rows.append((label, fmt.format(statistics.median(v))))
    rows.append(("training time (sum of steps)", f"{sum(steps):.1f} s"))
    last = train[-1]
    if isinstance(last.get("loss"), int | float):
        rows.append(("last loss", f"{last['loss']:.4f} (step {last.get('step')})"))
    return Section("Throughput", rows)


def _evaluation(ev: dict[str, Any]) -> list[Section]:
    if not ev:
        return []

    def pct(x: Any) -> str:
        return f"{x:.1%}" if isinstance(x, int | float) else "-"

    def num(x: Any) -> str:
        return f"{x:.4f}" if isinstance(x, int | float) else "-"

    out = []
    if "accuracy_before" in ev or "accuracy_after" in ev:
        rows = [
            [
                "before training",
                str(ev.get("step_before", "-")),
                pct(ev.get("accuracy_before")),
                num(ev.get("loss_before")),
            ],
            [
                "after training",
                str(ev.get("step_after", "-")),
                pct(ev.get("accuracy_after")),
                num(ev.get("loss_after")),
            ],
        ]
        note = (
            f"chance {pct(ev.get('chance'))} ({ev.get('chance_definition', '')}); "
            f"{ev.get('num_samples', '?')} samples; {ev.get('metric', '')}"
        )
        out.append(
            Section(
                "Held-out evaluation", table=(["", "step", "exact match", "loss"], rows), note=note
            )
        )
    later = ev.get("evaluations")
    if isinstance(later, dict) and later:
        rows = [
            [
                str(e.get("data")),
                str(e.get("weights")),
                str(e.get("step", "-")),
                str(e.get("total")),
                pct(e.get("accuracy")),
                num(e.get("loss")),
                pct(e.get("chance")),
            ]
            for e in later.values()
            if isinstance(e, dict)
        ]
        header = ["data", "weights", "step", "samples", "exact match", "loss", "chance"]
        out.append(Section("vlaunch eval results", table=(header, rows)))
    examples = ev.get("examples_after") or []
    if examples:
        rows = [[str(e.get("reference")), str(e.get("prediction"))] for e in examples[:8]]
        out.append(Section("Examples after training", table=(["reference", "prediction"], rows)))
    return out


def _tuning(tuning: Any) -> Section | None:
    if not isinstance(tuning, dict):
        return None
    modes, total, trainable = (tuning.get(k) or {} for k in ("modes", "total", "trainable"))
    rows = []
    for part in ("vision_tower", "projector", "language_model", "other"):
        if part == "other" and not total.get(part):
            continue
        t, n = total.get(part, 0), trainable.get(part, 0)
        share = f"{100 * n / t:.2f}%" if t else "-"
        rows.append([part, str(modes.get(part, "-")), f"{t:,}", f"{n:,}", share])
    note_parts = []
    lora = tuning.get("lora")
    if isinstance(lora, dict):
        note_parts.append(f"LoRA r={lora.get('r')} alpha={lora.get('alpha')}")
    for key, label in (
        ("modules_to_save", "trained in full, saved in the adapter"),
        ("trained_outside_adapter", "trained outside the adapter"),
    ):
        if tuning.get(key):
            note_parts.append(f"{label}: {', '.join(tuning[key])}")
    return Section(
        f"Tuning ({tuning.get('family', '?')})",
        table=(["part", "mode", "parameters", "trainable", "%"], rows),
        note="; ".join(note_parts) or None,
    )


def _files(run: Path) -> Section:
    rows = []
    for name, label in (
        ("adapter", "adapter (PEFT)"),
        ("model", "model (full)"),
        ("tensorboard", "TensorBoard events"),
        ("eval.json", "evaluation"),
    ):
        if (run / name).exists():
            rows.append((label, str(run / name)))
    ckpts = sorted(p.name for p in run.glob("checkpoint_*") if p.is_dir())
    if ckpts:
        rows.append(("checkpoints", ", ".join(ckpts)))
    return Section("Files", rows)


def _gib(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 1024**2:.1f} MiB"


# --------------------------------------------------------------------------- rendering


def write_report(run: Path, out: Path | None = None, fmt: Format | None = None) -> Path:
    """Render the report of `run` to `out` (default `<run>/report.<fmt>`); returns its path."""
    if fmt is None:
        fmt = "md" if out is not None and out.suffix.lower() in (".md", ".markdown") else "html"
    from trainer.report_render import render_html, render_markdown

    report = build_report(run)
    out = (out or run / f"report.{fmt}").expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        out.write_text(render_html(report), encoding="utf-8")
    else:
        folder = out.with_name(out.stem + "_files")
        folder.mkdir(exist_ok=True)
        for f in report.figures:
            (folder / f"{f.name}.png").write_bytes(f.png)
        out.write_text(render_markdown(report, lambda f: f"{folder.name}/{f.name}.png"), "utf-8")
    return out
