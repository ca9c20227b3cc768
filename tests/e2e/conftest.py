"""Fixtures of the end-to-end tests (real Ray clusters on this machine)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.trainer.helpers import make_shapes


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session", autouse=True)
def private_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tiny models are built into this session's own cache (VLAUNCH_CACHE), so tests never
    depend on, or race with, a shared ~/.cache/vlaunch; child processes inherit it."""
    old = os.environ.get("VLAUNCH_CACHE")
    os.environ["VLAUNCH_CACHE"] = str(tmp_path_factory.mktemp("vlaunch-cache"))
    from trainer.models.loading import tiny_model_path

    tiny_model_path("llava")  # built once here rather than raced for by every rank
    yield
    if old is None:
        os.environ.pop("VLAUNCH_CACHE", None)
    else:
        os.environ["VLAUNCH_CACHE"] = old
