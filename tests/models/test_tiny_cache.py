"""The tiny-model cache: a half-written folder (no config.json) is replaced, not fatal, and
processes that ask for the same tiny model at once all get it complete."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainer.models.tiny.folder import _tiny_version, tiny_model_path
from vlaunch_core.errors import UserError


def _entries(folder: Path) -> list[str]:
    """What a folder of the cache holds, the build lock file aside."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_debris_without_config_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / _tiny_version() / "llava"
    target.mkdir(parents=True)
    (target / "tokenizer.json").write_text("{}")  # what a killed writer once left behind
    path = tiny_model_path("llava", tmp_path)
    assert path == target
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()
    assert _entries(path.parent) == ["llava"]  # no stale folders left


def _first_use(root: str, barrier: Any, results: Any) -> None:
    from vlaunch_core.models.configs import model_config_dict

    barrier.wait()  # all processes ask at the same moment, as ranks started together do
    path = tiny_model_path("llava", Path(root))
    # What a rank does next: read the config (this failed when a folder was not complete).
    results.put((str(path), model_config_dict(str(path))["model_type"]))


def test_processes_asking_at_once_all_get_the_complete_model(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    args = (str(tmp_path), barrier, results)
    procs = [ctx.Process(target=_first_use, args=args) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    got = [results.get(timeout=10) for _ in procs]
    target = tmp_path / _tiny_version() / "llava"
    assert got == [(str(target), "llava")] * 3
    assert _entries(target.parent) == ["llava"]  # no temporary or stale folders left


def test_a_built_folder_is_found_without_importing_transformers(tmp_path: Path) -> None:
    built = tiny_model_path("llava", tmp_path)
    code = (
        "import sys; from pathlib import Path; "
        "from trainer.models.tiny.folder import tiny_model_path; "
        f"print(tiny_model_path('llava', Path({str(tmp_path)!r}))); "
        "print('transformers' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == [str(built), "False False"]


def test_a_name_that_is_not_a_type_never_reaches_the_disk(tmp_path: Path) -> None:
    (tmp_path / _tiny_version()).mkdir()
    outside = tmp_path / "elsewhere"  # what <cache>/<version>/../elsewhere names
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    with pytest.raises(UserError, match="unknown tiny model type"):
        tiny_model_path("../elsewhere", tmp_path)
