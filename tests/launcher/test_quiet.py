"""Quiet by default, everything with -v: the filters of vlaunch_core/quiet.py, and
bitsandbytes imported only by QLoRA (peft imports it whenever peft is imported)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings

import pytest

from tests.trainer.helpers import child_env
from vlaunch_core import quiet


@pytest.fixture
def fresh_logger(monkeypatch: pytest.MonkeyPatch) -> logging.Logger:
    log = logging.getLogger("DeepSpeed")
    monkeypatch.setattr(log, "filters", [])
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))
    return log


def test_harmless_lines_are_filtered_and_others_kept(
    fresh_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    quiet.quiet_dependencies(progress_bars=True)
    quiet.quiet_dependencies(progress_bars=True)  # twice: one filter
    assert len(fresh_logger.filters) == 1
    drop = fresh_logger.filters[0]

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("DeepSpeed", logging.WARNING, "x.py", 1, msg, None, None)

    assert not drop.filter(record("Setting accelerator to CPU. If you have GPU or other ..."))  # type: ignore[union-attr]
    assert drop.filter(record("ZeRO-3 ran out of memory"))  # type: ignore[union-attr]


def test_verbose_filters_nothing(
    fresh_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    quiet.quiet_dependencies(progress_bars=False)
    assert fresh_logger.filters == []


def test_the_cli_hands_verbose_to_the_processes_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.cli import configure_logging

    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    configure_logging(1, False)
    import os

    assert os.environ[quiet.VERBOSE_ENV] == "1"
    from trainer.ray_host import PASSED_ENV

    assert quiet.VERBOSE_ENV in PASSED_ENV  # and on to the Ray workers


PROBE = """
import json, sys
from trainer.models.quantization import bitsandbytes_only_for_qlora
bitsandbytes_only_for_qlora(sys.argv[1] == "qlora")
import peft
from peft.import_utils import is_bnb_available
print(json.dumps([sys.modules.get("bitsandbytes") is not None, is_bnb_available()]))
"""


@pytest.mark.parametrize(("mode", "expected"), [("lora", [False, False]), ("qlora", [True, True])])
def test_bitsandbytes_is_imported_only_for_qlora(mode: str, expected: list[bool]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected
    if mode == "lora":
        assert "bitsandbytes" not in proc.stderr  # no kernel lookup, no warning
