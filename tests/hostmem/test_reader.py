"""`SafetensorsIndex` reads exactly the element ranges a shard needs, in any dtype."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainer.models.safetensors_index import SafetensorsIndex
from vlaunch_core.errors import UserError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    first = {
        "a.weight": torch.randn(37, 11, generator=g),
        "b.bf16": torch.randn(5, 7, 3, generator=g).to(torch.bfloat16),
    }
    second = {"c.ids": torch.arange(1000, dtype=torch.int64), "d.scalar": torch.tensor(3.5)}
    save_file(first, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(second, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in first}
    weight_map |= {k: "model-00002-of-00002.safetensors" for k in second}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return tmp_path


def _all(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out |= load_file(str(f))
    return out


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.bfloat16, torch.float64])
def test_ranges_match_safetensors(folder: Path, dtype: torch.dtype | None) -> None:
    index = SafetensorsIndex.of_folder(folder)
    assert index is not None
    expected = _all(folder)
    assert sorted(index.keys()) == sorted(expected)
    for key, full in expected.items():
        if dtype is not None and not full.is_floating_point():
            continue
        flat = full.reshape(-1)
        n = flat.numel()
        for start, count in [(0, n), (0, 0), (n // 3, n // 2), (n - 1, 1)]:
            out = torch.empty(count, dtype=dtype or full.dtype)
            index.read(key, start, out)
            want = flat[start : start + count].to(out.dtype)
            assert torch.equal(out, want), (key, start, count, dtype)
    index.close()


def test_rows_of_a_matrix_are_one_contiguous_read(folder: Path) -> None:
    index = SafetensorsIndex.of_folder(folder)
    assert index is not None
    full = _all(folder)["a.weight"]
    rows = torch.empty(9, 11)
    index.read("a.weight", 19 * 11, rows)  # rows [19, 28): what rank 1 of 2 holds of 37 rows
    assert torch.equal(rows, full[19:28])
    assert torch.equal(index.read_full("b.bf16", torch.float32), _all(folder)["b.bf16"].float())


def test_out_of_range_and_truncated_files_are_errors(folder: Path) -> None:
    index = SafetensorsIndex.of_folder(folder)
    assert index is not None
    with pytest.raises(ValueError, match="outside"):
        index.read("c.ids", 990, torch.empty(20, dtype=torch.int64))
    index.close()
    shard = folder / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    index = SafetensorsIndex.of_folder(folder)
    assert index is not None
    with pytest.raises(UserError, match="ends before"):
        index.read_full("c.ids")


def test_a_folder_without_safetensors_has_no_index(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    assert SafetensorsIndex.of_folder(tmp_path) is None
