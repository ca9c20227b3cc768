"""What the trainer calls: a job spec and a processor in, dataset + sampler + collator out.

    data = build_train_data(spec, processor, family, rank=r, world_size=w, micro_batch_size=m)
    data.sampler.start_at(global_step)          # resume exactly mid-epoch (any world size)
    for batch in data.loader(num_workers=2):    # a `collate.Batch`
        out = model(**batch.to(device).inputs, use_cache=False)

Both builders index the whole mixture first and raise one `ProblemReport` if any sample is
malformed, names a missing media file or escapes its media root.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict

from trainer.data.collate import Collator, check_packing
from trainer.data.dataset import MediaOptions, MixtureDataset, MixturePart, index_dataset
from trainer.data.encode import SampleEncoder
from vlaunch_core.data.mixture import resolve_mixture
from vlaunch_core.data.problems import KINDS, DataProblem
from vlaunch_core.data.sampler import EvalBatchSampler, GlobalBatchSampler
from vlaunch_core.errors import Problem, ProblemReport
from vlaunch_core.host_memory import MAX_AUTO_WORKERS

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

    from trainer.data.positions import RopeIndex
    from vlaunch_core.models.description import ModelDescription
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)

SHOWN_PROBLEMS = 20


def _loader(
    dataset: Any,
    sampler: Any,
    collator: Any,
    num_workers: int,
    prefetch_factor: int | None,
    pin_memory: bool,
) -> DataLoader:
    from torch.utils.data import DataLoader

    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"prefetch_factor": prefetch_factor or 2, "persistent_workers": False}
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=num_workers,
        pin_memory=pin_memory,
        **extra,
    )


class LoaderArgs(TypedDict):
    num_workers: int
    prefetch_factor: int | None


def loader_settings(spec: JobSpec, plan: Plan, local_world_size: int, rank: int = 0) -> LoaderArgs:
    """`num_workers` and `prefetch_factor` of this rank's DataLoader.

    Explicit `data.num_workers` / `data.prefetch_factor` are used as they are. `auto` takes
    the plan's choice (cores per rank and the node's RAM budget, `vlaunch_core/host_memory.py`),
    capped by the cores this process may actually use. Logged on rank 0.
    """
    import os

    d = spec.data
    choice = plan.host_memory.loader if plan.host_memory is not None else None
    workers = int(d.num_workers) if d.num_workers != "auto" else None
    prefetch = int(d.prefetch_factor) if d.prefetch_factor != "auto" else None
    if workers is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        by_cores = max(0, min(MAX_AUTO_WORKERS, cores // max(1, local_world_size) - 1))
        workers = min(by_cores, choice.num_workers) if choice is not None else by_cores
        if prefetch is None and choice is not None:
            prefetch = choice.prefetch_factor
        if rank == 0:
            logger.info(
                "data loader: %d worker(s) x prefetch %s per rank (data.num_workers=auto: "
                "%d usable cores / %d rank(s); %s)",
                workers,
                prefetch if prefetch is not None else 2,
                cores,
                local_world_size,
                choice.reason if choice is not None else "no host-memory plan",
            )
    return LoaderArgs(num_workers=workers, prefetch_factor=prefetch)


class TrainData(NamedTuple):
    dataset: MixtureDataset
    sampler: GlobalBatchSampler
    collator: Collator

    def loader(
        self, num_workers: int = 0, prefetch_factor: int | None = None, pin_memory: bool = False
    ) -> DataLoader:
        """A DataLoader over this rank's micro-batches from the sampler's position."""
        return _loader(
            self.dataset, self.sampler, self.collator, num_workers, prefetch_factor, pin_memory
        )


class EvalData(NamedTuple):
    dataset: MixtureDataset
    sampler: EvalBatchSampler
    collator: Collator

    def loader(
        self, num_workers: int = 0, prefetch_factor: int | None = None, pin_memory: bool = False
    ) -> DataLoader:
        return _loader(
            self.dataset, self.sampler, self.collator, num_workers, prefetch_factor, pin_memory
        )


def build_mixture(
    spec: JobSpec,
    split: Literal["train", "eval"],
    processor: Any,
    family: ModelDescription | None,
    *,
    check_media: bool = True,
) -> MixtureDataset:
    """Index the mixture and wrap it with the job's encoder; all problems raised at once."""
    d = spec.data
    parts: list[MixturePart] = []
    problems: list[DataProblem] = []
    indexed: dict[str, Any] = {}
    limits = media_limits(family)
    for item in resolve_mixture(spec, split):
        name = item.dataset.name
        if name not in indexed:
            indexed[name] = index_dataset(item.dataset, check_media=check_media, **limits)
            problems += indexed[name][1]
        parts.append(MixturePart(item.dataset, indexed[name][0], item.repeat))
    if problems:
        raise _report(split, problems)
    encoder = SampleEncoder(
        processor,
        family,
        max_length=d.max_length,
        overlength=d.overlength,
        system_prompt=d.system_prompt,
    )
    dataset = MixtureDataset(
        parts, encoder, MediaOptions.from_spec(d, processor), substitute_dropped=split == "train"
    )
    logger.info("%s mixture: %d samples from %d dataset(s)", split, len(dataset), len(parts))
    return dataset


def media_limits(family: ModelDescription | None) -> dict[str, Any]:
    """What media a sample may carry for this model (`index_dataset` keywords)."""
    if family is None:
        return {}
    return {
        "max_images": family.quirks.max_images,
        "videos": family.supports_video or family.supports_multi_image,
        "model": family.name,
    }


def _report(split: str, problems: list[DataProblem]) -> ProblemReport:
    shown = [
        Problem(
            p.file if p.index < 0 else f"{p.file} sample {p.index}",
            f"{KINDS.get(p.kind, p.kind)}: {p.message}",
        )
        for p in problems[:SHOWN_PROBLEMS]
    ]
    if len(problems) > SHOWN_PROBLEMS:
        shown.append(Problem("", f"... and {len(problems) - SHOWN_PROBLEMS} more"))
    return ProblemReport(
        title=f"the {split} data has problems (`vlaunch data check JOB.yaml` lists them all)",
        problems=shown,
    )


def build_train_data(
    spec: JobSpec,
    processor: Any,
    family: ModelDescription | None,
    *,
    rank: int = 0,
    world_size: int = 1,
    micro_batch_size: int,
    global_batch_size: int | None = None,
    rope_index: RopeIndex | None = None,
) -> TrainData:
    """The training mixture, this rank's resumable sampler and the collator (`rope_index`:
    the model's M-RoPE index for packed rows, `trainer.data.positions.rope_index`)."""
    d = spec.data
    if d.packing:
        check_packing(family)
    dataset = build_mixture(spec, "train", processor, family)
    sampler = GlobalBatchSampler(
        len(dataset),
        global_batch_size=global_batch_size or spec.train.global_batch_size,
        micro_batch_size=micro_batch_size,
        rank=rank,
        world_size=world_size,
        seed=spec.train.seed,
        shuffle=d.shuffle,
        group_by_length=d.group_by_length,
        lengths=dataset.lengths() if d.group_by_length else None,
    )
    return TrainData(dataset, sampler, _collator(processor, family, d.packing, rope_index))


def build_eval_data(
    spec: JobSpec,
    processor: Any,
    family: ModelDescription | None,
    *,
    rank: int = 0,
    world_size: int = 1,
    micro_batch_size: int,
) -> EvalData:
    """The eval mixture in order, sharded across ranks without repeats (never packed)."""
    dataset = build_mixture(spec, "eval", processor, family)
    sampler = EvalBatchSampler(
        len(dataset), micro_batch_size=micro_batch_size, rank=rank, world_size=world_size
    )
    return EvalData(dataset, sampler, _collator(processor, family, packing=False))


def _collator(
    processor: Any,
    family: ModelDescription | None,
    packing: bool,
    rope_index: RopeIndex | None = None,
) -> Collator:
    tok = getattr(processor, "tokenizer", processor)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return Collator(int(pad), family, packing=packing, rope_index=rope_index)


@dataclass
class GenerationPrompt:
    """Inputs to generate one sample's last answer, and that reference answer."""

    inputs: dict[str, torch.Tensor]
    answer: str
    source: str
    index: int


def generation_prompts(
    dataset: MixtureDataset, positions: Iterable[int]
) -> Iterator[GenerationPrompt]:
    """Prompts for exact-match evaluation (e.g. `positions = data.sampler.indices`)."""
    for i in positions:
        sample = dataset.sample(i)
        images, videos = dataset.load_media(i, sample)
        inputs, answer = dataset.encoder.encode_prompt(sample, images, videos)
        yield GenerationPrompt(inputs, answer, sample.source, sample.index)
