"""Held-out evaluation: mean token loss, and exact match of greedy answers.

Each rank takes every `world`-th sample of `data.eval_mixture`. Exact match generates the last
answer of each sample greedily and compares it with the reference after normalisation (case,
surrounding spaces and final punctuation). Every rank runs the same number of batches and
generation steps, padded where its shard is shorter, because under FSDP and ZeRO-3 each
forward pass is a collective.

`eval.json` in the run directory keeps the accuracy before training (step 0) and after the
latest evaluation, with the chance level: the share of the most common reference answer,
i.e. what a model that ignores the image could reach by always giving one answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from trainer import dist
from trainer.dist import DistEnv
from trainer.loss import PlainLoss, TokenLoss, model_inputs, target_tokens
from trainer.rundir import RunDir, write_json_atomic

if TYPE_CHECKING:
    import torch

    from vlaunch_core.models.description import ModelDescription
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)

EXAMPLES = 8


def normalise(answer: str) -> str:
    return answer.strip().strip(string.punctuation + " ").casefold()


@dataclass
class EvalResult:
    loss: float | None
    correct: int
    total: int
    chance: float | None
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None

    def metrics(self) -> dict[str, float]:
        out = {}
        if self.loss is not None:
            out["loss"] = self.loss
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        return out

    def summary(self) -> str:
        parts = []
        if self.accuracy is not None:
            parts.append(f"exact match {self.accuracy:.1%} ({self.correct}/{self.total})")
        if self.chance is not None:
            parts.append(f"chance {self.chance:.1%}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        return ", ".join(parts)


def left_pad(prompts: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """One generation batch: sequence tensors left-padded, media tensors concatenated."""
    import torch

    from trainer.data.collate import _pad_cat
    from trainer.data.encode import SEQ_KEYS

    width = max(int(p["input_ids"].shape[1]) for p in prompts)
    out: dict[str, torch.Tensor] = {}
    for key in prompts[0]:
        values = [p[key] for p in prompts]
        if key in SEQ_KEYS:
            rows = []
            for v in values:
                pad = v.new_full(
                    (1, width - v.shape[1], *v.shape[2:]), pad_id if key == "input_ids" else 0
                )
                rows.append(torch.cat([pad, v], dim=1))
            out[key] = torch.cat(rows, dim=0)
        else:
            out[key] = _pad_cat(values, 0) if len(values) > 1 else values[0]
    if "attention_mask" not in out:
        out["attention_mask"] = (out["input_ids"] != pad_id).long()
    return out


class EvalTarget(Protocol):
    """What the evaluator needs of the model: a `Strategy` in training, `LocalTarget` else."""

    env: DistEnv

    @property
    def base_model(self) -> Any: ...

    def autocast(self) -> contextlib.AbstractContextManager[Any]: ...

    def input_dtype(self) -> torch.dtype | None: ...

    def forward(self, batch: dict[str, Any]) -> Any: ...


class LocalTarget:
    """A loaded model in this process, outside training (`vlaunch eval`)."""

    def __init__(self, model: Any) -> None:
        import torch

        self.model = model
        device = next(model.parameters()).device
        self.env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device(device))

    @property
    def base_model(self) -> Any:
        return self.model

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def input_dtype(self) -> torch.dtype | None:
        return next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.model(**batch)


class Evaluator:
    """Loss and exact match on the eval mixture; every rank calls `run()` together.

    Rank r of W evaluates samples r, r+W, r+2W, ... in batches of `batch_size`. `shards`
    lets one process evaluate the shards of several ranks in turn (`vlaunch eval` replays a
    run's evaluation batch for batch, so its numbers are reproduced exactly).
    """

    def __init__(
        self,
        spec: JobSpec,
        processor: Any,
        family: ModelDescription,
        strategy: EvalTarget,
        *,
        batch_size: int,
        shards: Sequence[int] | None = None,
        world_size: int | None = None,
        loss: TokenLoss | None = None,
    ) -> None:
        from trainer.data.build import build_eval_data

        self.spec = spec
        self.strategy = strategy
        self.loss: TokenLoss = loss if loss is not None else PlainLoss()
        """The training run's token loss (`trainer.loss.build_loss`), so that `vlaunch eval`
        reproduces a run's numbers."""
        self.env = strategy.env
        self.batch_size = max(1, batch_size)
        self.data = build_eval_data(
            spec,
            processor,
            family,
            rank=self.env.rank,
            world_size=self.env.world_size,
            micro_batch_size=self.batch_size,
        )
        tok = getattr(processor, "tokenizer", processor)
        self.tokenizer = tok
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.stop_ids = {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}
        dataset = self.data.dataset
        answers = [
            s.turns[-1].text
            for s in (dataset.sample(i) for i in range(len(dataset)))
            if s.turns and s.turns[-1].role == "assistant"
        ]
        self.max_new_tokens = 2 + max(
            (len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers), default=8
        )
        counts = Counter(normalise(a) for a in answers)
        self.chance = max(counts.values()) / len(answers) if answers else None
        n = len(dataset)
        world = world_size or self.env.world_size
        ranks = shards if shards is not None else (self.env.rank,)
        self.shards = [list(range(r, n, world)) for r in ranks]
        self._tick: Callable[[], None] = lambda: None
        self.rounds = math.ceil(math.ceil(n / world) / self.batch_size)

    @property
    def total_batches(self) -> int:
        """Forward passes and generations `run` makes (for progress)."""
        return 2 * len(self.shards) * max(self.rounds, 1)

    def run(self, progress: Callable[[int, int], None] | None = None) -> EvalResult:
        """Loss and exact match over every shard; `progress(done, total)` after each batch."""
        import torch

        model = self.strategy.base_model
        was_training = model.training
        model.eval()
        loss_sum, tokens, correct, total = 0.0, 0, 0, 0
        examples: list[dict[str, str]] = []
        done = [0]

        def tick() -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], self.total_batches)

        self._tick = tick
        try:
            with torch.no_grad():
                for shard in self.shards:
                    shard_loss, shard_tokens = self._loss(shard)
                    shard_correct, shard_total, shard_examples = self._exact_match(model, shard)
                    loss_sum += shard_loss
                    tokens += shard_tokens
                    correct += shard_correct
                    total += shard_total
                    examples += shard_examples[: EXAMPLES - len(examples)]
        finally:
            model.train(was_training)
        loss_all, tokens_all, correct_all, total_all = dist.all_reduce_sum(
            [loss_sum, tokens, correct, total], self.env.device
        )
        loss = loss_all / tokens_all if tokens_all else None
        return EvalResult(loss, int(correct_all), int(total_all), self.chance, examples)

    def _batches(self, shard: list[int]) -> list[list[int]]:
        """One shard's index batches, padded to the same count on every rank ([] = padding)."""
        b = self.batch_size
        out = [shard[i : i + b] for i in range(0, len(shard), b)]
        while len(out) < self.rounds:
            out.append([])
        return out

    def _loss(self, shard: list[int]) -> tuple[float, int]:
        """(summed token loss, target tokens) of one shard."""
        strategy = self.strategy
        data = self.data
        loss_sum = 0.0
        tokens = 0
        for indices in self._batches(shard):
            real = [data.dataset[i] for i in indices] or [data.dataset[shard[0] if shard else 0]]
            batch = data.collator(real).inputs
            with strategy.autocast():
                inputs = model_inputs(batch, self.env.device, strategy.input_dtype())
                ce = self.loss(strategy.forward, inputs, batch["labels"])
            if indices:  # padding rounds only keep the collectives in step
                loss_sum += float(ce)
                tokens += target_tokens(batch["labels"])
            self._tick()
        return loss_sum, tokens

    def _exact_match(self, model: Any, shard: list[int]) -> tuple[int, int, list[dict[str, str]]]:
        from trainer.data.build import generation_prompts

        dataset = self.data.dataset
        correct = total = 0
        examples: list[dict[str, str]] = []
        for indices in self._batches(shard):
            real = indices or [shard[0] if shard else 0]
            prompts = list(generation_prompts(dataset, real))
            batch = left_pad([p.inputs for p in prompts], self.pad_id)
            inputs = model_inputs(batch, self.env.device, self.strategy.input_dtype())
            with self.strategy.autocast():
                out = model.generate(
                    **inputs,
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    min_new_tokens=self.max_new_tokens,
                    eos_token_id=None,
                    pad_token_id=self.pad_id,
                )
            self._tick()
            if not indices:
                continue
            new = out[:, inputs["input_ids"].shape[1] :].tolist()
            for p, ids in zip(prompts, new, strict=True):
                cut = next((k for k, t in enumerate(ids) if t in self.stop_ids), len(ids))
                text = self.tokenizer.decode(ids[:cut], skip_special_tokens=True)
                ok = normalise(text) == normalise(p.answer)
                correct += ok
                total += 1
                if len(examples) < EXAMPLES:
                    examples.append({"reference": p.answer, "prediction": text})
        return correct, total, examples

    def record(self, run_dir: RunDir, result: EvalResult, *, before: bool, step: int) -> None:
        """Merge this result into `<run>/eval.json` (rank 0)."""
        path = run_dir.eval_file
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (ValueError, RecursionError):
                data = {}
            if not isinstance(data, dict):
                data = {}
        when = "before" if before else "after"
        data.update(
            {
                f"accuracy_{when}": result.accuracy,
                f"loss_{when}": result.loss,
                f"step_{when}": step,
                "chance": result.chance,
                "num_samples": result.total,
                "chance_definition": "share of the most common reference answer",
                "metric": "exact match of the greedy answer (case and final punctuation ignored)",
                f"examples_{when}": result.examples,
            }
        )
        write_json_atomic(path, data)
