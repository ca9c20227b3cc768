"""`vlaunch plan JOB.yaml [--nodes N] [--gpus-per-node G] [--profile P] [--json]`.

Exit status: 0 when the plan fits, 1 when the device or the host memory prediction does not
fit (the reason and the fixes are printed), 2 for an invalid spec or an impossible batch.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from launcher.commands.common import add_job_argument, add_resource_flags, load_job, print_json

if TYPE_CHECKING:
    from vlaunch_core.host_memory import HostMemoryEstimate
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_argument(parser)
    add_resource_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from vlaunch_core.plan import make_plan

    spec = load_job(args)
    plan = make_plan(spec)
    if args.json:
        print_json(plan.to_json())
    else:
        render(spec, plan)
    return 0 if plan.fits else 1


def _gib(n: int) -> str:
    if abs(n) < 1024**3:
        return f"{n / 1024**2:.1f} MiB"
    return f"{n / 1024**3:.2f} GiB"


def render(spec: JobSpec, plan: Plan) -> None:
    from rich.console import Console
    from rich.table import Table

    b, w = plan.batch, plan.world
    table = Table(title=f"plan for '{spec.name}'", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row(
        "hardware",
        f"{w.nodes} node(s) x {w.gpus_per_node} x {w.profile.name} = world {b.world_size}",
    )
    glob = str(b.global_batch_size)
    if b.rounded:
        glob += f" (asked {b.requested_global_batch_size}, rounded: train.batch_rounding)"
    table.add_row("global batch", glob)
    table.add_row(
        "micro batch x accumulation x world",
        f"{b.micro_batch_size} x {b.grad_accum_steps} x {b.world_size} = "
        f"{b.micro_batch_size * b.grad_accum_steps * b.world_size}",
    )
    table.add_row("precision / strategy", f"{plan.precision} / {spec.train.strategy}")
    modes = spec.tuning.modes()
    table.add_row(
        "tuning",
        ", ".join(f"{k}={v}" for k, v in modes.items())
        + (f" (preset {spec.tuning.preset})" if spec.tuning.preset else ""),
    )
    m = plan.memory
    if m is not None:
        table.add_row(
            "parameters",
            f"{m.total_params:,} total, "
            f"{sum(m.trainable_params.values()):,} trained "
            f"({', '.join(f'{k} {v:,}' for k, v in m.trainable_params.items() if v)})",
        )
        table.add_row("memory per device", ", ".join(f"{k} {_gib(v)}" for k, v in m.parts.items()))
        table.add_row(
            "predicted total",
            f"{_gib(m.total)} of {_gib(m.capacity)} "
            f"({_gib(m.usable)} usable with {m.headroom:.0%} headroom)",
        )
        verdict = "[green]fits[/]" if m.fits else "[red]does not fit[/]"
        table.add_row(
            "verdict",
            verdict + f" ({_gib(m.usable - m.total)} headroom left)" if m.fits else verdict,
        )
    if plan.host_memory is not None:
        _host_rows(table, plan.host_memory)
    for note in [*b.notes, *plan.notes]:
        table.add_row("note", note)
    Console().print(table)


def _host_rows(table: Any, h: HostMemoryEstimate) -> None:
    parts = ", ".join(f"{k.replace('_', ' ')} {_gib(v)}" for k, v in h.parts.items() if v)
    table.add_row("host memory per node", parts)
    table.add_row(
        "host predicted",
        f"{_gib(h.total)} of {_gib(h.node_ram)} RAM ({_gib(h.usable)} usable); loading "
        f"{_gib(h.loading)}, training {_gib(h.training)}; low-memory loading "
        + ("on" if h.low_memory_loading else "off"),
    )
    loader = h.loader
    table.add_row(
        "data loader per rank",
        f"{loader.num_workers} worker(s) x prefetch {loader.prefetch_factor} "
        f"({_gib(h.worker_bytes)} each; {loader.reason})",
    )
    verdict = "[green]fits[/]" if h.fits else "[red]does not fit[/]"
    table.add_row(
        "host verdict",
        verdict + f" ({_gib(h.usable - h.total)} headroom left)" if h.fits else verdict,
    )
