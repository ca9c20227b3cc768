"""Progress outside training (eval, export, data check, model loading): on a terminal a bar
with the ETA; piped, a line when work starts, one every 30 s with the ETA, one at the end."""

from __future__ import annotations

import io
import logging

import pytest

from trainer import progress
from trainer.progress import Steps, stage


def test_piped_steps_say_when_they_start_how_long_is_left_and_when_they_end(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    with (
        caplog.at_level(logging.INFO, logger="trainer.progress"),
        Steps("evaluating shapes_eval", 50, unit="batches", tty=False) as steps,
    ):
        for done in range(1, 51):
            clock[0] += 2.0  # 2 s a batch
            steps.update(done)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "evaluating shapes_eval (50 batches) ..."
    # every 30 s, not every batch: at 30 s (15 done, 35 left: 70 s), 60 s, 90 s
    assert lines[1:4] == [
        "evaluating shapes_eval: 15/50 batches, ETA 1:10",
        "evaluating shapes_eval: 30/50 batches, ETA 0:40",
        "evaluating shapes_eval: 45/50 batches, ETA 0:10",
    ]
    assert lines[-1] == "evaluating shapes_eval: done in 1:40"
    assert len(lines) == 5


def test_a_stage_says_how_long_it_took(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    with caplog.at_level(logging.INFO, logger="trainer.progress"), stage("loading tiny:llava"):
        clock[0] += 75
    assert [r.getMessage() for r in caplog.records] == [
        "loading tiny:llava ...",
        "loading tiny:llava: done in 1:15",
    ]


def test_on_a_terminal_a_bar_with_the_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", buffer)
    with Steps("evaluating", 4, unit="batches", tty=True) as steps:
        assert steps._bar is not None
        columns = [type(c).__name__ for c in steps._bar.columns]
        assert "TimeRemainingColumn" in columns and "BarColumn" in columns
        for done in range(1, 5):
            steps.update(done)
