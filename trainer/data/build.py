"""What the trainer calls: a job spec and a processor in, dataset + sampler + collator out.

    data = build_train_data(spec, processor, family, rank=r, world_size=w, micro_batch_size=m)
    data.sampler.start_at(global_step)          # resume exactly mid-epoch (any world size)
    for batch in data.loader(num_workers=2):    # a `collate.Batch`
        out = model(**batch.to(device).inputs, use_cache=False)

Both builders open every dataset of the mixture first and raise one `ProblemReport` if any
cannot be opened, or if any sample of a JSON file is malformed, names a missing media file or
escapes its media root (sharded sources are counted, not read whole: see
`trainer.data.dataset`). Hugging Face dataset ids are resolved in the local cache
(`trainer.data.hub`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict

from trainer.data.collate import Collator, check_packing
from trainer.data.dataset import MediaOptions, MixtureDataset, MixturePart, index_dataset
from trainer.data.encode import SampleEncoder
from vlaunch_core.data.mixture import MixtureItem, resolve_mixture
from vlaunch_core.data.problems import KINDS, DataProblem
from vlaunch_core.data.sampler import EvalBatchSampler, GlobalBatchSampler
from vlaunch_core.errors import Problem, ProblemReport
from vlaunch_core.host_memory import MAX_AUTO_WORKERS, LoaderChoice, whole_step_prefetch

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
    capped by the cores this process may actually use. An `auto` prefetch keeps the plan's
    batches in flight (an optimizer step's micro batches where RAM allows) over the workers
    that run. Logged on rank 0.
    """
    import os

    d = spec.data
    choice = plan.host_memory.loader if plan.host_memory is not None else None
    workers = int(d.num_workers) if d.num_workers != "auto" else None
    prefetch = int(d.prefetch_factor) if d.prefetch_factor != "auto" else None
    cores = 0
    if workers is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        by_cores = max(0, min(MAX_AUTO_WORKERS, cores // max(1, local_world_size) - 1))
        workers = min(by_cores, choice.num_workers) if choice is not None else by_cores
    if prefetch is None:
        prefetch = _auto_prefetch(choice, workers)
    if rank == 0 and d.num_workers == "auto":
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


def _auto_prefetch(choice: LoaderChoice | None, workers: int) -> int | None:
    """`data.prefetch_factor: auto`: the plan's batches in flight (an optimizer step's where
    RAM allows) over the workers that run here; None without a plan."""
    if choice is None:
        return None
    planned = choice.num_workers * choice.prefetch_factor
    return whole_step_prefetch(choice.prefetch_factor, workers, planned)


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

    def resume_positions(self, global_step: int) -> dict[str, tuple[str, int]]:
        """Where each sequential dataset (tar shards) goes on at optimizer step
        `global_step`: {dataset: (shard, sample index in it)} of its next sample."""
        import numpy as np

        sampler, dataset = self.sampler, self.dataset
        epoch, step = divmod(global_step, sampler.steps_per_epoch)
        ahead = sampler.epoch_order(epoch)[step * sampler.global_batch_size :]
        part_of = np.searchsorted(np.asarray(dataset.starts), ahead, side="right") - 1
        out: dict[str, tuple[str, int]] = {}
        for k, part in enumerate(dataset.parts):
            hits = np.flatnonzero(part_of == k)
            if part.source.access == "sequential" and len(hits):
                _, j = dataset.locate(int(ahead[hits[0]]))
                out[part.dataset.name] = part.source.where(j)
        return out


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
    opened: dict[str, MixturePart] = {}
    limits = media_limits(family)
    for item in resolve_mixture(spec, split):
        name = item.dataset.name
        if name not in opened:
            part, found = open_part(item, check_media=check_media, limits=limits)
            problems += found
            if part is None:
                continue
            opened[name] = part
        parts.append(replace(opened[name], repeat=item.repeat))
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


def open_part(
    item: MixtureItem, *, check_media: bool, limits: dict[str, Any]
) -> tuple[MixturePart | None, list[DataProblem]]:
    """One dataset of the mixture as a part: a JSON file indexed and checked sample by
    sample, any other source opened and counted."""
    from trainer.data.hub import resolve_hub
    from vlaunch_core.data.sources import SourceError, open_source, source_kind
    from vlaunch_core.data.sources.jsonfile import JsonSource

    ds = item.dataset
    try:
        if source_kind(ds.entry) != "json":
            source = open_source(ds, hub=resolve_hub)
            logger.info(
                "dataset %s: %d samples in %d %s shard(s)",
                ds.name,
                len(source),
                len(source.shards()),
                source.kind,
            )
            return MixturePart(ds, source, item.repeat), []
        index, problems = index_dataset(ds, check_media=check_media, **limits)
        if problems:
            return None, problems
        source = open_source(ds)
        assert isinstance(source, JsonSource)
        source.with_spans(index.offsets, index.sizes)
        return MixturePart(ds, source, item.repeat, index.lengths, indexed=True), []
    except SourceError as e:
        return None, [DataProblem(e.kind, e.where, -1, e.detail)]


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
        order=dataset.order(spec.train.seed, d.shuffle),
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
