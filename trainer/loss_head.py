"""The loss inside the output layer: summed cross-entropy without full logits.

While a micro batch's loss is computed, the model's output layer (`get_output_embeddings()`,
an `nn.Linear`) gets a forward of its own (an instance attribute, so that every hook around
the module still runs): it keeps only the positions that carry a target, computes their
summed cross-entropy with `trainer.linear_ce` (chunked, or Liger's kernel on CUDA), hands the
loss back to the caller and returns a tiny placeholder instead of the logits.

Why inside that forward: that is where every strategy has the weight whole. FSDP2 gathers
the root unit's parameters (the head among them) for the model's forward, and outside it
`lm_head.weight` is a sharded DTensor; DeepSpeed ZeRO-3 gathers a module's parameters only in
its forward hooks. The loss function computes its gradients during that forward, so its
backward needs neither the weight nor the logits.

What the model does to the logits after its head (Gemma's final soft-capping, Cohere's
`logit_scale`, Granite's `logits_scaling`, ...) must be done per chunk too. The candidates
come from the config (numeric keys about the output logits); which one the model really
applies is *measured* once: a forward without gradients returns a probe of known values from
the head, and the model's `.logits` show what was done to them. A transform that none of the
candidates explains, a head called other than once, or positions that do not match the
labels fall back to the plain loss (full logits), said in the log.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.loss import IGNORE_INDEX, PlainLoss, TokenLoss, summed_cross_entropy
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PROBE = (-40.0, -3.0, 0.5, 7.0)
"""Values the head returns in place of logits while probing (distinct under any transform)."""
PROBE_RTOL = 1e-4


@dataclass(frozen=True)
class OutputTransform:
    """What the model does to its head's output: `softcap(scale * z)`."""

    scale: float = 1.0
    softcap: float | None = None

    def apply(self, values: list[float]) -> list[float]:
        out = [v * self.scale for v in values]
        if self.softcap is not None:
            out = [self.softcap * math.tanh(v / self.softcap) for v in out]
        return out

    def describe(self) -> str:
        parts = []
        if self.scale != 1.0:
            parts.append(f"logits x {self.scale:g}")
        if self.softcap is not None:
            parts.append(f"soft-capped at {self.softcap:g}")
        return ", ".join(parts) or "none"


IDENTITY = OutputTransform()

_NOT_OUTPUT = ("attn", "attention", "router", "init", "temperature", "contrastive", "cell")


def logit_settings(config: Any) -> dict[str, float]:
    """Numeric config values that may change the output logits (top level and text config)."""
    found: dict[str, float] = {}
    configs = [config]
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        with contextlib.suppress(Exception):
            configs.append(get_text())
    for cfg in configs:
        items = (cfg if isinstance(cfg, Mapping) else cfg.to_dict()).items()
        for key, value in items:
            k = key.lower()
            if "logit" not in k or any(w in k for w in _NOT_OUTPUT):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
                continue
            found[key] = float(value)
    return found


def candidate_transforms(settings: dict[str, float]) -> list[OutputTransform]:
    """Every transform the settings could mean; the identity first."""
    scales = {1.0}
    caps: set[float | None] = {None}
    for key, value in settings.items():
        k = key.lower()
        if "cap" in k:
            caps.add(value)
        else:  # a scale: multiplied (Cohere) or divided by (Granite)
            scales.update({value, 1.0 / value})
    out = [IDENTITY]
    for s in sorted(scales):
        for c in sorted(caps, key=lambda v: -1.0 if v is None else v):
            t = OutputTransform(s, c)
            if t not in out:
                out.append(t)
    return out


def identify(observed: list[float], candidates: list[OutputTransform]) -> OutputTransform | None:
    """The candidate that maps `PROBE` to `observed`, if any."""
    for t in candidates:
        want = t.apply(list(PROBE))
        if len(observed) == len(want) and all(
            math.isclose(a, b, rel_tol=PROBE_RTOL, abs_tol=1e-6)
            for a, b in zip(observed, want, strict=True)
        ):
            return t
    return None


@dataclass
class _Pending:
    """One forward's request to the head."""

    probe: bool
    rows: torch.Tensor | None = None
    """Flat indices (batch x position) of the hidden states that carry a target."""
    targets: torch.Tensor | None = None
    calls: int = 0
    positions: tuple[int, int] | None = None
    loss: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)


class HeadLoss:
    """`loss(forward, inputs, labels) -> summed CE` computed inside the output layer (see the
    module docstring). `forward(inputs)` runs the (wrapped) model."""

    def __init__(self, model: Any, impl: str, config: Any) -> None:
        import torch

        head = model.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear):
            raise TypeError(f"its output layer is a {type(head).__name__}, not a Linear")
        self.head = head
        self.impl = impl
        """`chunked` or `liger`."""
        self.settings = logit_settings(config)
        self.candidates = candidate_transforms(self.settings)
        self.transform: OutputTransform | None = None
        self.plain = False
        """True once probing showed the head's output cannot be fused: full logits."""
        self._pending: _Pending | None = None

    @property
    def kind(self) -> str:
        return "plain" if self.plain else self.impl

    def __call__(
        self, forward: Callable[[dict[str, Any]], Any], inputs: dict[str, Any], labels: Any
    ) -> torch.Tensor:
        if self.transform is None and not self.plain:
            self._probe(forward, inputs, labels)
        if self.plain:
            logits = forward({**inputs, "use_cache": False}).logits
            return summed_cross_entropy(logits, labels)
        rows, targets = _target_rows(labels)
        device = self.head.weight.device
        pending = _Pending(
            probe=False,
            rows=rows.to(device, non_blocking=True),
            targets=targets.to(device, non_blocking=True),
        )
        with self._installed(pending):
            out = forward({**inputs, "use_cache": False})
        if pending.calls != 1 or pending.loss is None:
            raise RuntimeError(
                f"the model called its output layer {pending.calls} times in this forward "
                "(once when probed): set train.loss=plain"
            )
        # The backward also passes through the head's and the model's outputs (adding zero),
        # so that hooks on them run as for a plain loss: ZeRO-3 pairs the pre-backward hook on
        # a module's outputs with the post-backward hook on its inputs.
        loss: torch.Tensor = pending.loss + 0.0 * out.logits.float().sum()
        return loss

    # ------------------------------------------------------------------ probing

    def _probe(
        self, forward: Callable[[dict[str, Any]], Any], inputs: dict[str, Any], labels: Any
    ) -> None:
        import torch

        pending = _Pending(probe=True)
        # The probe draws no random numbers of the run (dropout): a resumed run probes at
        # another step than an uninterrupted one and must still draw the same masks.
        device = self.head.weight.device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), self._installed(pending):
            out = forward({**inputs, "use_cache": False})
        why = None
        logits = getattr(out, "logits", None)
        if pending.calls != 1:
            why = f"its output layer was called {pending.calls} times in one forward"
        elif pending.positions != tuple(labels.shape):
            why = (
                f"its output layer saw {pending.positions} positions for labels of shape "
                f"{tuple(labels.shape)}"
            )
        elif logits is None or tuple(logits.shape[-1:]) != (len(PROBE),):
            why = "its logits are reshaped after the output layer"
        else:
            observed = [float(v) for v in logits.reshape(-1, len(PROBE))[0].float().tolist()]
            self.transform = identify(observed, self.candidates)
            if self.transform is None:
                why = (
                    "it changes the logits after its output layer in a way vlaunch does not "
                    f"know (config: {self.settings or 'no logit settings'})"
                )
        if why is not None:
            self.plain = True
            logger.warning(
                "loss: the plain loss (full logits) for this model, not the %s one: %s",
                self.impl,
                why,
            )
            return
        assert self.transform is not None
        logger.info(
            "loss: %s linear cross-entropy inside the output layer (full logits never "
            "materialised); output transform: %s",
            self.impl,
            self.transform.describe(),
        )

    # ------------------------------------------------------------------ the head's forward

    @contextlib.contextmanager
    def _installed(self, pending: _Pending) -> Iterator[None]:
        head = self.head
        self._pending = pending
        head.forward = self._forward  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            del head.forward
            self._pending = None

    def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
        import torch

        pending = self._pending
        assert pending is not None
        pending.calls += 1
        batch, positions = int(hidden.shape[0]), int(hidden.shape[1])
        probe = torch.tensor(PROBE, dtype=torch.float32, device=hidden.device)
        placeholder = probe.repeat(batch, positions, 1)
        if pending.probe:
            pending.positions = (batch, positions)
            return placeholder
        assert pending.rows is not None and pending.targets is not None
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pending.rows)
        pending.loss = loss = self._loss(h, pending.targets)
        return placeholder + 0.0 * loss  # the output depends on the loss (see __call__)

    def _loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch

        from trainer.linear_ce import chunked_linear_cross_entropy, liger_linear_cross_entropy

        transform = self.transform or IDENTITY
        weight: torch.Tensor = self.head.weight
        bias: torch.Tensor | None = self.head.bias
        device_type = h.device.type
        if torch.is_autocast_enabled(device_type):  # as autocast would run the Linear
            dtype = torch.get_autocast_dtype(device_type)
            h, weight = h.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        elif h.dtype != weight.dtype:
            h = h.to(weight.dtype)
        if transform.scale != 1.0:  # scale * (h W^T + b) = (scale h) W^T + scale b
            h = h * transform.scale
            bias = bias * transform.scale if bias is not None else None
        with torch.autocast(device_type, enabled=False):
            if self.impl == "liger":
                return liger_linear_cross_entropy(
                    h.contiguous(), weight, bias, targets, softcap=transform.softcap
                )
            return chunked_linear_cross_entropy(h, weight, bias, targets, softcap=transform.softcap)


def _target_rows(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices of the positions that predict a target, those targets), on the CPU
    (no device sync): position t predicts label t + 1."""
    import torch

    length = labels.shape[1]
    nxt = labels[:, 1:]
    keep = nxt != IGNORE_INDEX
    cols = keep.nonzero()
    rows = cols[:, 0] * length + cols[:, 1]
    return rows, nxt[keep].to(torch.long)


def build_loss(setting: str, model: Any, device: torch.device) -> TokenLoss:
    """The loss `train.loss` asks for on `model` (unwrapped, as built): `plain`, `chunked`,
    `liger` (CUDA, liger-kernel installed), or `auto` (Liger where it can run, else chunked;
    the plain loss where the model's output layer is not a plain Linear)."""
    from trainer.linear_ce import liger_available

    if setting == "plain":
        return PlainLoss()
    if setting == "liger" and not (device.type == "cuda" and liger_available()):
        raise UserError(
            "train.loss=liger needs a CUDA device and the liger-kernel package",
            hint="pip install 'vlaunch[liger]' on a GPU machine, or train.loss=auto",
        )
    impl = setting
    if setting == "auto":
        impl = "liger" if device.type == "cuda" and liger_available() else "chunked"
    try:
        return HeadLoss(model, impl, model.config)
    except TypeError as e:
        logger.warning("loss: the plain loss (full logits) for this model, not %s: %s", impl, e)
        return PlainLoss()
