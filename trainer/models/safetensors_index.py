"""Read exact element ranges of the tensors of a safetensors checkpoint, without mmap.

A rank that holds one shard of a parameter needs only a contiguous range of its elements:
rows `[a, b)` of dim 0 for FSDP2, a flat range for a ZeRO-3 partition. Both are one
contiguous run of bytes in the file (safetensors stores tensors row-major), so we read that
run with `readinto` straight into the destination (or a bounded staging buffer when the dtype
or device differs). Nothing is mapped: with mmap every page a rank touched would stay in its
resident set while the file is open, and peak RSS would again grow with the whole model.

Format: 8-byte little-endian header length, a JSON header `{name: {dtype, shape,
data_offsets: [begin, end]}}` (offsets from the end of the header), then the data.
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
STAGING_BYTES = 64 * 1024**2
"""Largest staging buffer when a range must be converted (dtype) or moved (GPU) after reading."""

_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


class UnsupportedCheckpoint(Exception):
    """The checkpoint holds something this reader does not read (the caller falls back)."""


@dataclass(frozen=True)
class TensorEntry:
    file: Path
    dtype: str
    """A torch dtype name (`bfloat16`, ...)."""
    shape: tuple[int, ...]
    offset: int
    """Absolute byte offset of the first element in `file`."""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class SafetensorsIndex:
    """Every tensor of a checkpoint folder (`model.safetensors` or a sharded index)."""

    def __init__(self, entries: dict[str, TensorEntry]) -> None:
        self.entries = entries
        self._files: dict[Path, io.FileIO] = {}

    @classmethod
    def of_folder(cls, folder: Path) -> SafetensorsIndex | None:
        """The index of `folder`'s safetensors weights, or None if it has none."""
        if (folder / INDEX_FILE).is_file():
            try:
                weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as e:
                raise UserError(
                    f"{folder / INDEX_FILE}: not a safetensors index: {e}",
                    hint="the folder must be what save_pretrained wrote",
                ) from e
            files = sorted({folder / f for f in weight_map.values()})
        elif (folder / SINGLE_FILE).is_file():
            files = [folder / SINGLE_FILE]
        else:
            return None
        entries: dict[str, TensorEntry] = {}
        for f in files:
            entries.update(read_header(f))
        return cls(entries)

    def keys(self) -> list[str]:
        return list(self.entries)

    def read(self, key: str, start: int, out: torch.Tensor) -> None:
        """Fill `out` (contiguous) with elements `[start, start + out.numel())` of the
        flattened tensor `key`, converting to `out`'s dtype and device."""
        import torch

        e = self.entries[key]
        n = out.numel()
        if start < 0 or start + n > e.numel:
            raise ValueError(f"{key}: range [{start}, {start + n}) outside {e.numel} elements")
        if n == 0:
            return
        assert out.is_contiguous(), "read() fills contiguous tensors only"
        src = getattr(torch, e.dtype)
        flat = out.view(-1)
        size = torch.empty((), dtype=src).element_size()
        f = self._file(e.file)
        if out.dtype == src and out.device.type == "cpu":
            f.seek(e.offset + start * size)
            _read_exact(f, flat.view(torch.uint8).numpy(), e.file)
            return
        step = max(1, STAGING_BYTES // size)
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            staging = torch.empty(hi - lo, dtype=src)
            f.seek(e.offset + (start + lo) * size)
            _read_exact(f, staging.view(torch.uint8).numpy(), e.file)
            flat[lo:hi].copy_(staging)

    def read_full(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The whole tensor `key` on the CPU (in `dtype` if given)."""
        import torch

        e = self.entries[key]
        out = torch.empty(e.shape, dtype=dtype or getattr(torch, e.dtype))
        self.read(key, 0, out)
        return out

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def _file(self, path: Path) -> io.FileIO:
        if path not in self._files:
            self._files[path] = path.open("rb", buffering=0)
        return self._files[path]


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of one safetensors file, by name."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as e:
        raise UserError(
            f"{path}: not a safetensors file: {e}",
            hint="re-save the model with save_pretrained(safe_serialization=True)",
        ) from e
    base = 8 + length
    out: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise UnsupportedCheckpoint(f"{path}: tensor {name} has dtype {info['dtype']}")
        out[name] = TensorEntry(
            file=path,
            dtype=_DTYPES[info["dtype"]],
            shape=tuple(info["shape"]),
            offset=base + int(info["data_offsets"][0]),
        )
    return out


def _read_exact(f: io.FileIO, buf: memoryview | object, path: Path) -> None:
    view = memoryview(buf).cast("B")  # type: ignore[arg-type]
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise UserError(
                f"{path}: the file ends before the tensor data does (truncated download?)",
                hint="download or save the model again",
            )
        done += got
