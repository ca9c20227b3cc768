"""The baseline of the GPU benchmark: a plain `transformers.Trainer` + peft.

Same model and trainable parameters as vlaunch's run of the configuration (built by
`bench.gpu_setup.build_model`: `apply_tuning` wraps it with peft, LoRA on the language model,
the projector in full, non-reentrant gradient checkpointing when asked; then peft's own LoRA
Linear and transformers' `Conv3d` patch embedding again, as a `Trainer` + peft user runs
them, not vlaunch's `trainer/models/lora_linear.py` and `patch_embed.py`), the same synthetic
batch every step, AdamW (fused on CUDA) with a constant LR, clipping at 1.0, bf16 autocast on
CUDA. The Trainer computes the model's own loss from `labels`. A callback times each
optimizer step (synchronised on CUDA); warm-up steps are skipped. The row is built and
finished as the loop's (`bench.gpu_setup.Setup`).
"""

from __future__ import annotations

import tempfile
import time
from typing import TYPE_CHECKING, Any

from bench.gpu_setup import GpuConfig, build_model, prepare, sync

if TYPE_CHECKING:
    import torch


class _Rows:
    """A dataset of `n` placeholder rows; the collator returns the fixed batch."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def measure_baseline(
    cfg: GpuConfig, *, device: str, steps: int, warmup: int, image_px: int
) -> dict[str, Any]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    on_gpu = device == "cuda"
    dev = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    times: list[float] = []

    class StepTimer(TrainerCallback):
        t0 = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            sync(dev)
            self.t0 = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            sync(dev)
            times.append(time.perf_counter() - self.t0)

    from trainer.models.lora_linear import unfuse_lora_linears
    from trainer.models.patch_embed import conv_patch_embeddings

    with tempfile.TemporaryDirectory(prefix="vlaunch-bench-hf-") as tmp:
        setup = prepare(cfg, dev, image_px=image_px, out_dir=tmp)
        row = setup.row("transformers.Trainer + peft")
        row["loss"] = "plain"  # the model's own, from the full logits
        model, _, _, report = build_model(setup.spec, dev, setup.plan.precision)
        # as a Trainer + peft user runs it: peft's own LoRA Linear, transformers' Conv3d
        unfuse_lora_linears(model)
        conv_patch_embeddings(model)
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=cfg.micro_batch_size,
            max_steps=warmup + steps,
            learning_rate=setup.spec.train.lr,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            max_grad_norm=setup.spec.train.max_grad_norm,
            bf16=setup.plan.precision == "bf16",
            optim="adamw_torch_fused" if on_gpu else "adamw_torch",
            gradient_checkpointing=False,  # already enabled (non-reentrant) by apply_tuning
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            use_cpu=not on_gpu,
        )

        def collate(_rows: list[int]) -> dict[str, torch.Tensor]:
            return setup.batch

        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=_Rows(cfg.micro_batch_size * (warmup + steps)),
            data_collator=collate,
            callbacks=[StepTimer()],
        )
        try:
            trainer.train()
        except torch.cuda.OutOfMemoryError as e:
            return setup.out_of_memory(row, e)
    return setup.finish(row, report, times, warmup)
