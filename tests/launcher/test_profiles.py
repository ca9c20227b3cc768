"""Hardware profiles: built-ins, user YAML, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.cli import main
from vlaunch_core.errors import ProblemReport, UserError
from vlaunch_core.profiles import BUILTIN, all_profiles, get_profile


def test_required_builtins_present() -> None:
    for name in ("rtx3090ti", "rtx4090", "a100-40gb", "a100-80gb", "h100-80gb", "h200", "l40s"):
        assert name in BUILTIN
    assert get_profile("cpu").is_gpu is False
    assert get_profile("rtx3090ti").gpus_per_node == 2
    assert get_profile("a100-80gb").device_memory_bytes == 80 * 1024**3


def test_user_profile_file(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("a6000:\n  gpu_memory_mib: 49140\n  gpus_per_node: 4\n  host_memory_gib: 256\n")
    prof = all_profiles([str(f)])["a6000"]
    assert (prof.gpus_per_node, prof.host_memory_gib, prof.name) == (4, 256, "a6000")


def test_bad_user_profile_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("a6000:\n  gpu_memory_mb: 49140\n")
    with pytest.raises(ProblemReport) as e:
        all_profiles([str(f)])
    assert "a6000.gpu_memory_mb" in str(e.value) and "gpu_memory_mib" in str(e.value)


def test_unknown_profile_suggests() -> None:
    with pytest.raises(UserError, match="h100-80gb"):
        get_profile("h100")


def test_cli_lists_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--json"]) == 0
    assert '"rtx3090ti"' in capsys.readouterr().out
