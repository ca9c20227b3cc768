"""The batch planner: global batch = micro batch x accumulation steps x world size, exactly.

VILA's `sft.sh` computes `per_device = global / nodes / gpus / accumulation` in integer shell
arithmetic, so 64 on 8 x 8 GPUs with accumulation 2 silently becomes per-device batch 0 and
2048 on 7 GPUs silently trains with 2044. This planner never rounds unless asked
(`train.batch_rounding`), and when the numbers cannot multiply out it fails with the nearest
valid global sizes, accumulation steps and device counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vlaunch_core.errors import UserError

MAX_BATCH = 1 << 24
"""The largest global batch (and micro batch, accumulation) a spec takes: far above any real
job, and small enough that enumerating divisors (O(sqrt n)) is instant."""


@dataclass(frozen=True)
class BatchPlan:
    """A resolved batch: `micro_batch_size * grad_accum_steps * world_size == global_batch_size`."""

    global_batch_size: int
    micro_batch_size: int
    grad_accum_steps: int
    world_size: int
    requested_global_batch_size: int
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        product = self.micro_batch_size * self.grad_accum_steps * self.world_size
        assert product == self.global_batch_size, (self, product)

    @property
    def rounded(self) -> bool:
        return self.global_batch_size != self.requested_global_batch_size


class BatchPlanError(UserError):
    """The batch numbers cannot multiply out; carries the nearest valid alternatives."""

    def __init__(self, message: str, hint: str, suggestions: dict[str, list[int]]):
        super().__init__(message, hint=hint)
        self.suggestions = suggestions


def divisors(n: int) -> list[int]:
    """All positive divisors of n, ascending (n is a batch size: at most MAX_BATCH)."""
    if n > MAX_BATCH:
        raise UserError(f"{n} is more than {MAX_BATCH}: too big to be a batch size")
    small, large = [], []
    i = 1
    while i * i <= n:
        if n % i == 0:
            small.append(i)
            if i != n // i:
                large.append(n // i)
        i += 1
    return small + large[::-1]


def nearest_multiples(value: int, unit: int, count: int = 2) -> list[int]:
    """The `count` positive multiples of `unit` nearest to `value` on each side (not `value`)."""
    below: list[int] = []
    k = value // unit
    while k >= 1 and len(below) < count:
        if k * unit != value:
            below.append(k * unit)
        k -= 1
    above = [(value // unit + 1 + i) * unit for i in range(count)]
    return sorted(below + above)


def nearest_worlds(total: int, world: int, count: int = 2) -> list[int]:
    """Device counts near `world` that divide `total` (so the batch splits evenly)."""
    divs = [d for d in divisors(total) if d != world]
    below = [d for d in divs if d < world][-count:]
    above = [d for d in divs if d > world][:count]
    return below + above


def _fmt(values: list[int]) -> str:
    return ", ".join(str(v) for v in values) if values else "none"


def resolve_batch(
    global_batch_size: int,
    world_size: int,
    *,
    micro: int | None = None,
    accum: int | None = None,
    rounding: str = "exact",
    fits: Callable[[int], bool] | None = None,
) -> BatchPlan:
    """Resolve micro batch and accumulation so that micro x accum x world == global, exactly.

    `micro`/`accum` None means `auto`. With both auto, the largest micro batch for which
    `fits(micro)` is true is chosen (hence the fewest accumulation steps); without `fits`, the
    whole per-device batch is one micro batch. `rounding` ('down'/'up') is the only way a
    global batch that does not split evenly is changed, and the plan says so in `notes`.
    """
    if global_batch_size < 1 or world_size < 1:
        raise UserError(
            f"global batch ({global_batch_size}) and world size ({world_size}) must be >= 1"
        )
    for name, value in (("micro_batch_size", micro), ("grad_accum_steps", accum)):
        if value is not None and value < 1:
            raise UserError(f"train.{name} must be >= 1 or 'auto' (got {value})")

    requested = global_batch_size
    notes: list[str] = []
    unit = world_size * (micro or 1) * (accum or 1)
    if global_batch_size % unit and rounding in ("down", "up"):
        down = max(unit, (global_batch_size // unit) * unit)
        up = -(-global_batch_size // unit) * unit
        global_batch_size = down if rounding == "down" else up
        notes.append(
            f"global batch {requested} is not a multiple of {unit} "
            f"(world {world_size}"
            + (f" x micro {micro}" if micro else "")
            + (f" x accumulation {accum}" if accum else "")
            + f"): rounded {rounding} to {global_batch_size} as train.batch_rounding={rounding}"
        )

    if global_batch_size > MAX_BATCH:
        raise UserError(
            f"global batch {global_batch_size} is more than {MAX_BATCH} samples per step"
            + (f" (rounded {rounding} from {requested})" if notes else ""),
            hint="set train.global_batch_size (and the micro batch and accumulation) to a "
            "size a job can train with",
        )
    if global_batch_size % world_size:
        alt_globals = nearest_multiples(global_batch_size, unit)
        alt_worlds = nearest_worlds(global_batch_size // ((micro or 1) * (accum or 1)), world_size)
        raise BatchPlanError(
            f"global batch {global_batch_size} does not split over {world_size} devices "
            f"({global_batch_size}/{world_size} = {global_batch_size / world_size:.2f} per "
            "device); vlaunch never rounds it silently",
            hint=(
                f"set train.global_batch_size to one of {_fmt(alt_globals)}; "
                f"or run on {_fmt(alt_worlds)} devices; "
                "or set train.batch_rounding=down (or up) to accept the nearest size"
            ),
            suggestions={"global_batch_size": alt_globals, "world_size": alt_worlds},
        )

    per_device = global_batch_size // world_size

    if micro is not None and accum is not None:
        if micro * accum != per_device:
            alt_accum = divisors(per_device)
            raise BatchPlanError(
                f"micro batch {micro} x accumulation {accum} x world {world_size} = "
                f"{micro * accum * world_size}, not the global batch {global_batch_size}",
                hint=(
                    f"set train.global_batch_size={micro * accum * world_size}; or keep the "
                    f"global batch and set train.grad_accum_steps to one of {_fmt(alt_accum)} "
                    "with train.micro_batch_size=auto"
                ),
                suggestions={
                    "global_batch_size": [micro * accum * world_size],
                    "grad_accum_steps": alt_accum,
                },
            )
        return BatchPlan(global_batch_size, micro, accum, world_size, requested, tuple(notes))

    if micro is not None:
        if per_device % micro:
            alt_micro = divisors(per_device)
            alt_globals = nearest_multiples(global_batch_size, world_size * micro)
            raise BatchPlanError(
                f"micro batch {micro} does not divide the per-device batch {per_device} "
                f"(global {global_batch_size} / world {world_size})",
                hint=(
                    f"set train.micro_batch_size to one of {_fmt(alt_micro)} (or auto); or set "
                    f"train.global_batch_size to one of {_fmt(alt_globals)}"
                ),
                suggestions={"micro_batch_size": alt_micro, "global_batch_size": alt_globals},
            )
        return BatchPlan(
            global_batch_size, micro, per_device // micro, world_size, requested, tuple(notes)
        )

    if accum is not None:
        if per_device % accum:
            alt_accum = divisors(per_device)
            alt_globals = nearest_multiples(global_batch_size, world_size * accum)
            alt_worlds = (
                nearest_worlds(global_batch_size // accum, world_size)
                if (global_batch_size % accum == 0)
                else []
            )
            raise BatchPlanError(
                f"global batch {global_batch_size} over {world_size} devices is {per_device} "
                f"per device, which accumulation {accum} cannot split "
                f"(micro batch would be {per_device / accum:g})",
                hint=(
                    f"set train.global_batch_size to one of {_fmt(alt_globals)}; or "
                    f"train.grad_accum_steps to one of {_fmt(alt_accum)}"
                    + (f"; or run on {_fmt(alt_worlds)} devices" if alt_worlds else "")
                ),
                suggestions={
                    "global_batch_size": alt_globals,
                    "grad_accum_steps": alt_accum,
                    "world_size": alt_worlds,
                },
            )
        return BatchPlan(
            global_batch_size, per_device // accum, accum, world_size, requested, tuple(notes)
        )

    # Both auto: the largest micro batch that fits, hence the fewest accumulation steps.
    chosen = 1
    for candidate in reversed(divisors(per_device)):
        if fits is None or fits(candidate):
            chosen = candidate
            break
    else:
        notes.append("even micro batch 1 does not fit the memory estimate")
    return BatchPlan(
        global_batch_size, chosen, per_device // chosen, world_size, requested, tuple(notes)
    )
