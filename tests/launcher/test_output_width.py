"""Every command's output at 80 columns, not a terminal (piped, as here): tables are plain
text, one row per line, and nothing is cut: full profile names, preset and architecture
names, dataset paths, mixture names. On a terminal, cells wrap and are never cut."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from launcher.output import Column, plain_table, print_table
from tests.k8s.helpers import run_cli

LONG_PROFILE = "team-cluster-a100-80gb-sxm4-nvlink-infiniband-partition-gpu-long"


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")


def test_profiles_show_full_names(tmp_path: Path) -> None:
    extra = tmp_path / "profiles.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                LONG_PROFILE: {
                    "description": "the team's partition, described at length for this test",
                    "gpu_memory_mib": 81920,
                    "gpus_per_node": 8,
                }
            }
        )
    )
    code, out, _ = run_cli(["profiles", "--file", str(extra)])
    assert code == 0
    assert "…" not in out and "│" not in out
    lines = out.splitlines()
    assert any(line.startswith(LONG_PROFILE + "  ") for line in lines)
    for name in ("a100-40gb", "a100-80gb", "h100-80gb", "rtx3090ti", "v100-32gb"):
        assert any(line.startswith(name + " ") for line in lines), name
    assert "the team's partition, described at length for this test" in out


def test_presets_show_full_names() -> None:
    code, out, _ = run_cli(["models", "--presets"])
    assert code == 0 and "…" not in out
    for preset in ("ln_vt_lora_llm", "lora_vt_qlora_llm", "fft_vt_lora_llm"):
        assert any(line.startswith(preset + " ") for line in out.splitlines()), preset
    assert "srun_ln_vt_lora_llm_grouped_nf4" in out


def test_models_show_full_architecture_names() -> None:
    code, out, _ = run_cli(["models"])
    assert code == 0 and "…" not in out
    assert "Qwen2_5_VLForConditionalGeneration" in out
    assert "LlavaNextVideoForConditionalGeneration" in out


def test_data_check_shows_full_dataset_paths(tmp_path: Path) -> None:
    deep = tmp_path / "a-rather-long-folder-name-for-datasets" / "vila-format" / "train-split"
    deep.mkdir(parents=True)
    data = deep / "a_dataset_file_with_a_long_descriptive_name.jsonl"
    sample = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    data.write_text(json.dumps(sample) + "\n")
    registry = tmp_path / "registry.yaml"
    name = "a_mixture_member_with_a_long_descriptive_name"
    registry.write_text(yaml.safe_dump({name: {"data_path": str(data)}}))
    code, out, _ = run_cli(["data", "check", "--registry", str(registry), "--mixture", f"{name}*2"])
    assert code == 0, out
    assert "…" not in out
    (row,) = [line for line in out.splitlines() if line.startswith(name)]
    assert str(data) in row or str(data.relative_to(Path.cwd().resolve())) in row


def test_plan_shows_the_full_run_name(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    name = "a-run-name-long-enough-to-be-cut-by-a-table-at-eighty-columns-of-terminal"
    job.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "model": {"name_or_path": "tiny:llava"},
                "data": {"mixture": "m", "datasets": {"m": {"data_path": "/data/m.json"}}},
                "train": {"global_batch_size": 8},
                "resources": {"profile": "cpu", "gpus_per_node": 2},
            }
        )
    )
    code, out, _ = run_cli(["plan", str(job)])
    assert code == 0 and "…" not in out
    assert out.splitlines()[0] == f"plan for '{name}'"
    assert "vision_tower=frozen" in out  # the tuning line, whole, on one line


def test_eval_table_shows_full_mixture_names(capsys: pytest.CaptureFixture[str]) -> None:
    from launcher.commands.evaluate import _print_table

    mixture = "shapes_eval_heldout_split+another_long_dataset_name_in_the_mixture*2"
    result = SimpleNamespace(
        total=200, loss=0.0299, accuracy=1.0, correct=200, chance=0.24, examples=[]
    )
    evaluation = SimpleNamespace(
        key="final", data=mixture, weights="/runs/demo/adapter", step=80, result=result
    )
    _print_table(evaluation, None)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith(mixture)]
    assert "/runs/demo/adapter (step 80)" in row and "100.0% (200/200)" in row


def test_plain_table_aligns_and_never_cuts() -> None:
    text = plain_table(
        "t",
        [Column("name"), Column("n", right=True), Column("text")],
        [("x" * 120, "1", "a\nb"), ("y", "100", "c")],
    )
    assert text.splitlines() == [
        "t",
        "name" + " " * 120 + "n  text",
        "x" * 120 + "    1  a; b",
        "y" + " " * 121 + "100  c",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_cells_wrap_and_are_never_cut() -> None:
    out = _Terminal()
    print_table(
        "t", [Column("name", keep=True), "description"], [(LONG_PROFILE, "d " * 60)], file=out
    )
    text = out.getvalue()
    assert "…" not in text
    squashed = "".join(ch for ch in text if ch not in "│┃ \n")
    assert LONG_PROFILE in squashed
