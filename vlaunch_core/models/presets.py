"""Tuning presets named after VILA's fine-tuning variants (torch-free).

VILA's fine-tuning guide lists ten variants (`srun_*` scripts) but never published them; each
preset here is one row of that table. In every preset the projector is fully trained unless the
job spec says otherwise (VILA: "in all cases the mm_projector is full fine-tuned").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

VisionMode = Literal["full", "lora", "layernorm", "frozen"]
ProjectorMode = Literal["full", "frozen"]
LanguageMode = Literal["full", "lora", "qlora", "frozen"]

VISION_MODES: tuple[str, ...] = ("full", "lora", "layernorm", "frozen")
PROJECTOR_MODES: tuple[str, ...] = ("full", "frozen")
LANGUAGE_MODES: tuple[str, ...] = ("full", "lora", "qlora", "frozen")


@dataclass(frozen=True)
class Preset:
    """Per-module tuning modes, plus the VILA script that trains the same way."""

    name: str
    vision_tower: VisionMode
    projector: ProjectorMode
    language_model: LanguageMode
    vila_script: str
    description: str

    @property
    def grouped(self) -> bool:
        """VILA's `*_grouped` scripts use the length-grouped sampler."""
        return self.vila_script.endswith("_grouped") or "_grouped_" in self.vila_script


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "fft", "full", "full", "full", "srun_fft_grouped", "full fine-tuning of every module"
        ),
        Preset(
            "lora_vt_llm",
            "lora",
            "full",
            "lora",
            "srun_lora_vt_llm_grouped",
            "LoRA on the vision tower and on the language model",
        ),
        Preset(
            "lora_vt_qlora_llm",
            "lora",
            "full",
            "qlora",
            "srun_lora_vt_llm_grouped_nf4",
            "LoRA on the vision tower, QLoRA (4-bit NF4) on the language model",
        ),
        Preset(
            "ln_vt_lora_llm",
            "layernorm",
            "full",
            "lora",
            "srun_ln_vt_lora_llm_grouped",
            "LayerNorm tuning of the vision tower, LoRA on the language model",
        ),
        Preset(
            "ln_vt_qlora_llm",
            "layernorm",
            "full",
            "qlora",
            "srun_ln_vt_lora_llm_grouped_nf4",
            "LayerNorm tuning of the vision tower, QLoRA on the language model",
        ),
        Preset(
            "fft_vt_lora_llm",
            "full",
            "full",
            "lora",
            "srun_fft_vt_lora_llm_grouped",
            "full fine-tuning of the vision tower, LoRA on the language model",
        ),
        Preset(
            "lora_llm",
            "frozen",
            "full",
            "lora",
            "srun_lora_llm",
            "LoRA on the language model only (vision tower frozen)",
        ),
        Preset(
            "qlora_llm",
            "frozen",
            "full",
            "qlora",
            "srun_lora_llm_nf4",
            "QLoRA on the language model only (vision tower frozen)",
        ),
        Preset(
            "fft_vt",
            "full",
            "full",
            "frozen",
            "srun_fft_vt",
            "full fine-tuning of the vision tower only",
        ),
        Preset(
            "ln_vt",
            "layernorm",
            "full",
            "frozen",
            "srun_ln_vt",
            "LayerNorm tuning of the vision tower only",
        ),
    )
}

#: VILA's script names, for `vlaunch slurm --variant` and `sbatch slurm/<variant>.sh`.
VARIANTS: dict[str, Preset] = {p.vila_script: p for p in PRESETS.values()}
