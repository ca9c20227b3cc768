"""The plan as a table (`vlaunch plan`, and `vlaunch local` before it trains)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlaunch_core.host_memory import HostMemoryEstimate
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec


def _gib(n: int) -> str:
    if abs(n) < 1024**3:
        return f"{n / 1024**2:.1f} MiB"
    return f"{n / 1024**3:.2f} GiB"


def print_plan(spec: JobSpec, plan: Plan) -> None:
    """Print the batch plan, the memory prediction by part and the verdict."""
    from launcher.output import Column, print_table

    b, w = plan.batch, plan.world
    table = _Rows()
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
    print_table(
        f"plan for '{spec.name}'", [Column("what"), Column("value")], table.rows, show_header=False
    )


class _Rows:
    """Rows of the plan table; rich markup in a value ([green]fits[/]) becomes styled text."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, Any]] = []

    def add_row(self, what: str, value: str) -> None:
        from rich.text import Text

        self.rows.append((what, Text.from_markup(value) if "[/]" in value else value))


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
