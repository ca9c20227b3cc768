"""Waiting for a Ray cluster says when it gives up: `vlaunch run` against a dead Ray head
logs the deadline once (then every 30 s, not every poll) and fails with how long it waited."""

from __future__ import annotations

import logging
import time

import pytest

from tests.trainer.helpers import free_port
from trainer import ray_cluster
from vlaunch_core.errors import UserError


def test_a_dead_head_is_given_up_on_at_a_stated_deadline(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray_cluster, "POLL_SECONDS", 0.2)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with (
        caplog.at_level(logging.INFO, logger="trainer.ray_cluster"),
        pytest.raises(UserError) as caught,
    ):
        ray_cluster.connect(address, time.monotonic() + 1.5)
    assert time.monotonic() - started < 10
    waiting = [r.getMessage() for r in caplog.records]
    assert len(waiting) == 1, waiting  # not one line per poll
    assert f"waiting for the Ray head at {address} (nothing listens there)" in waiting[0]
    assert "giving up in 1 s, at " in waiting[0] or "giving up in 2 s, at " in waiting[0]
    assert f"no Ray cluster to join at '{address}' after " in caught.value.message


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.1:6379", "10.0.0.1:6379"),
        ("head.example:6379", "head.example:6379"),
        ("auto", None),
        ("ray://10.0.0.1:10001", None),
    ],
)
def test_host_port_addresses_are_handed_to_the_job(address: str, expected: str | None) -> None:
    assert ray_cluster._host_port(address) == expected
