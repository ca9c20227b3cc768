"""Docs generated from the schema are current, and every shipped example validates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from launcher.docgen import render
from tests.conftest import REPO
from vlaunch_core.spec_load import load_spec


def test_golden_spec_reference_is_current() -> None:
    path = REPO / "docs" / "spec-reference.md"
    if os.environ.get("VLAUNCH_REGEN_GOLDEN"):
        path.write_text(render())
    assert path.read_text() == render(), (
        "docs/spec-reference.md is stale: run `make golden` (or python -m launcher.docgen)"
    )


def _job_specs() -> list[Path]:
    out = []
    for p in sorted((REPO / "examples").rglob("*.yaml")):
        data = yaml.safe_load(p.read_text())
        if isinstance(data, dict) and "model" in data and "name" in data:
            out.append(p)
    return out


@pytest.mark.parametrize("path", _job_specs(), ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name
