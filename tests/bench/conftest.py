"""Fixtures of the benchmark smoke tests: a work folder (the model cache is the session's,
tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the benchmarks write their models, data and runs (shared by the tests)."""
    return tmp_path_factory.mktemp("bench")
