"""Micro-batches: padded rows, or one packed row with attention kept inside each sample.

Padding: sequence tensors (`encode.SEQ_KEYS`) are right-padded to the longest sample
(`input_ids` with the pad id, `labels` with -100, masks with 0); media tensors are concatenated
along dim 0 (each processor output already counts images there, or has a batch dim of 1),
padding any other dim to the largest (LLaVA-NeXT patches, Idefics3 images per row).

Packing (`data.packing: true`): all samples of the micro-batch become one row. `position_ids`
restart at 0 for each sample and there is no `attention_mask`, which is how transformers
recognises packed sequences (`masking_utils.find_packed_sequence_indices` for sdpa/eager
masks; flash-attention builds varlen boundaries from the same position ids), so a token never
attends to another sample. Models with multimodal RoPE get `[4, 1, tokens]` position ids: the
text positions, then each sample's own 3-D positions from the model's `get_rope_index`
(`trainer.data.positions`). The model must be called with `use_cache=False` (a cache turns the
detection off). Families whose inputs cannot be packed this way are refused (`packing_problem`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from trainer.data.encode import IGNORE_INDEX, SEQ_KEYS, Encoded
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import torch

    from trainer.data.positions import RopeIndex
    from vlaunch_core.models.description import ModelDescription

#: Model types verified to give identical logits packed and one by one
#: (tests/data/test_packing.py); the quirks of others say why they cannot be packed. A new
#: family only needs that test: 1-D positions and M-RoPE (`RopeIndex`) are generic.
PACKABLE = frozenset(
    {
        "llava",
        "llava_next",
        "llava_next_video",
        "llava_onevision",
        "mistral3",
        "qwen2_5_vl",
        "qwen2_vl",
        "qwen3_vl",
        "qwen3_vl_moe",
    }
)


def packing_problem(family: ModelDescription | None) -> str | None:
    """Why this family cannot be packed, or None when it can."""
    if family is None:
        return "the model is unknown"
    if family.name in PACKABLE:
        return None
    return family.quirks.packing or f"packing is not verified for {family.name}"


def check_packing(family: ModelDescription | None) -> None:
    why = packing_problem(family)
    if why is not None:
        name = family.name if family is not None else "this model"
        raise UserError(
            f"data.packing is not supported for {name}: {why}",
            hint="set data.packing=false (data.group_by_length=true also cuts padding); "
            f"packing is verified for: {', '.join(sorted(PACKABLE))}",
        )


@dataclass
class Batch:
    """One micro-batch: `model(**batch.inputs)` (labels included) and what it holds."""

    inputs: dict[str, torch.Tensor]
    num_samples: int
    num_tokens: int
    """Real tokens (padding excluded)."""
    num_slots: int
    """Token slots computed (rows x columns, padding included)."""
    num_label_tokens: int
    num_truncated: int = 0
    num_substituted: int = 0
    """Samples dropped by the overlength policy and replaced by the next sample."""

    def to(self, device: Any, non_blocking: bool = False) -> Batch:
        moved = {k: v.to(device, non_blocking=non_blocking) for k, v in self.inputs.items()}
        return replace(self, inputs=moved)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader when `pin_memory=True`."""
        return replace(self, inputs={k: v.pin_memory() for k, v in self.inputs.items()})


def _pad_cat(tensors: Sequence[torch.Tensor], value: float, cat_dim: int = 0) -> torch.Tensor:
    """Concatenate along `cat_dim`, padding every other dim to the largest."""
    import torch

    ndim = tensors[0].dim()
    cat_dim %= ndim
    shape = [max(int(t.shape[d]) for t in tensors) for d in range(ndim)]
    padded = []
    for t in tensors:
        target = list(shape)
        target[cat_dim] = int(t.shape[cat_dim])
        if list(t.shape) == target:
            padded.append(t)
            continue
        out = t.new_full(target, value)
        out[tuple(slice(0, int(s)) for s in t.shape)] = t
        padded.append(out)
    return torch.cat(padded, dim=cat_dim)


class Collator:
    """`collate_fn` of the data loader: `Encoded` items (None = dropped) to a `Batch`."""

    def __init__(
        self,
        pad_token_id: int,
        family: ModelDescription | None = None,
        packing: bool = False,
        rope_index: RopeIndex | None = None,
    ) -> None:
        if packing:
            check_packing(family)
        self.pad_token_id = pad_token_id
        self.packing = packing
        self.rope_index = rope_index
        """The model's M-RoPE index (`trainer.data.positions.rope_index`); None: 1-D."""
        self.row_keys = family.quirks.row_media_keys if family else frozenset()
        self.concat_dims = dict(family.quirks.media_concat_dims) if family else {}
        self.family = family

    def _pad_value(self, key: str) -> int:
        return {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}.get(key, 0)

    def __call__(self, items: Sequence[Encoded | None]) -> Batch:
        kept = [e for e in items if e is not None]
        if not kept:
            return Batch({}, 0, 0, 0, 0)
        self._check_mixed_media(kept)
        inputs = self._pack(kept) if self.packing else self._pad(kept)
        n_tokens = sum(e.length for e in kept)
        labels = inputs["labels"]
        return Batch(
            inputs,
            len(kept),
            n_tokens,
            int(labels.numel()),
            int((labels != IGNORE_INDEX).sum()),
            num_truncated=sum(1 for e in kept if e.overlength),
            num_substituted=sum(1 for e in kept if e.substituted),
        )

    def _check_mixed_media(self, items: Sequence[Encoded]) -> None:
        """Refuse a micro batch of images and videos for a model that takes one or the other
        (its own error would be an opaque count mismatch deep in the forward pass)."""
        family = self.family
        if family is None or family.quirks.mixed_media:
            return
        keys = {k for e in items for k in e.tensors}
        if "pixel_values" in keys and "pixel_values_videos" in keys:
            raise UserError(
                f"{family.name} takes images or videos in one forward pass, not both; this "
                "micro batch has both",
                hint="set train.micro_batch_size=1, or train on images and on videos in "
                "separate runs",
            )

    def _cat(self, key: str, present: Sequence[torch.Tensor]) -> torch.Tensor:
        """Media tensors of several samples as one (the processor's own batch layout)."""
        if len(present) == 1:
            return present[0]
        return _pad_cat(present, 0, self.concat_dims.get(key, 0))

    def _pad(self, items: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        import torch

        keys = list(dict.fromkeys(k for e in items for k in e.tensors))
        out: dict[str, torch.Tensor] = {}
        for key in keys:
            present = [e.tensors[key] for e in items if key in e.tensors]
            if key in SEQ_KEYS or key in self.row_keys:
                rows = []
                for e in items:
                    if key in e.tensors:
                        rows.append(e.tensors[key])
                        continue
                    # A row without this tensor (a text-only sample): zeros of its shape.
                    shape = [1, *present[0].shape[1:]]
                    if key in SEQ_KEYS:
                        shape[1] = e.length
                    rows.append(present[0].new_zeros(shape))
                out[key] = _pad_cat(rows, self._pad_value(key))
            else:
                out[key] = self._cat(key, present)
        if "attention_mask" not in out:
            mask = torch.zeros_like(out["input_ids"])
            for r, e in enumerate(items):
                mask[r, : e.length] = 1
            out["attention_mask"] = mask
        return out

    def _pack(self, items: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        import torch

        out: dict[str, torch.Tensor] = {}
        for key in dict.fromkeys(k for e in items for k in e.tensors):
            if key == "attention_mask":
                continue  # its absence is what marks the row as packed
            present = [e.tensors[key] for e in items if key in e.tensors]
            if key in SEQ_KEYS:
                out[key] = torch.cat(present, dim=1)
            else:
                out[key] = self._cat(key, present)
        labels = []
        for e in items:
            lab = e.tensors["labels"].clone()
            lab[0, 0] = IGNORE_INDEX  # never learn a sample's first token from the previous one
            labels.append(lab)
        out["labels"] = torch.cat(labels, dim=1)
        text = torch.cat([torch.arange(e.length) for e in items]).unsqueeze(0)
        if self.rope_index is None:
            out["position_ids"] = text
        else:  # [text; M-RoPE t, h, w] x 1 row x tokens
            mrope = torch.cat([self.rope_index(e.tensors) for e in items], dim=2)
            out["position_ids"] = torch.cat([text.unsqueeze(0), mrope], dim=0)
        return out
