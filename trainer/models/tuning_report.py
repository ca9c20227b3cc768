"""The tuning plan report: what is trained, how, and how many parameters (printed and saved)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PARTS = ("vision_tower", "projector", "language_model", "other")
REPORT_FILE = "tuning.json"


@dataclass
class TuningReport:
    family: str
    modes: dict[str, str]
    """Mode of each part: vision_tower, projector, language_model."""
    total: dict[str, int]
    """Parameters per part: LoRA adapters included, each shared tensor once, and a
    `modules_to_save` module once (peft also keeps its frozen original in memory)."""
    trainable: dict[str, int]
    """Trainable parameters per part."""
    lr_multipliers: dict[str, float]
    lora: dict[str, Any] | None = None
    """r, alpha, dropout, use_dora, and per LoRA part its target regex and matched modules."""
    modules_to_save: list[str] = field(default_factory=list)
    """Non-LoRA modules trained next to the adapters (saved with the adapter)."""
    trained_outside_adapter: list[str] = field(default_factory=list)
    """Trained next to LoRA but NOT in the saved adapter (bare parameters such as LLaVA-NeXT's
    image_newline, a fully tuned language model): checkpoints and exports must save them."""
    frozen_unused: list[str] = field(default_factory=list)
    """Parameter prefixes the forward pass never uses: kept frozen whatever the mode."""
    quantized: bool = False
    gradient_checkpointing: bool = False
    part_overrides: dict[str, str] = field(default_factory=dict)
    """Parameter-name prefix -> part where names do not tell (the model's quirks)."""

    @property
    def total_params(self) -> int:
        return sum(self.total.values())

    @property
    def trainable_params(self) -> int:
        return sum(self.trainable.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_params"] = self.total_params
        data["trainable_params"] = self.trainable_params
        return data

    def save(self, run_dir: Path | str) -> Path:
        """Write `<run_dir>/tuning.json` and return its path."""
        path = Path(run_dir) / REPORT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path | str) -> TuningReport:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data.pop("total_params", None)
        data.pop("trainable_params", None)
        return cls(**data)

    def table(self) -> Any:
        """A rich Table: one row per part, and the total."""
        from rich.table import Table

        table = Table(title=f"Tuning plan ({self.family})")
        for col in ("part", "mode", "parameters", "trainable", "%", "lr x"):
            table.add_column(col, justify="left" if col in ("part", "mode") else "right")
        for part in PARTS:
            if part == "other" and not self.total.get(part):
                continue
            total, trainable = self.total.get(part, 0), self.trainable.get(part, 0)
            table.add_row(
                part,
                self.modes.get(part, "-"),
                _human(total),
                _human(trainable),
                f"{100 * trainable / total:.2f}" if total else "-",
                f"{self.lr_multipliers[part]:g}" if part in self.lr_multipliers else "-",
            )
        table.add_row(
            "total",
            "",
            _human(self.total_params),
            _human(self.trainable_params),
            f"{100 * self.trainable_params / max(self.total_params, 1):.2f}",
            "",
            style="bold",
        )
        if self.lora:
            table.caption = (
                f"LoRA r={self.lora['r']} alpha={self.lora['alpha']:g} "
                f"dropout={self.lora['dropout']:g}{' DoRA' if self.lora['use_dora'] else ''}; "
                + "; ".join(
                    f"{part}: {len(t['matched'])} modules"
                    for part, t in self.lora["targets"].items()
                )
            )
        return table

    def render(self) -> str:
        """The table as plain text (for logs)."""
        import io

        from rich.console import Console

        console = Console(width=100, file=io.StringIO(), color_system=None)
        console.print(self.table())
        return console.file.getvalue()  # type: ignore[attr-defined]


def _human(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)
