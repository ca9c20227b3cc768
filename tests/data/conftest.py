"""Fixtures of the data tests: the synthetic shapes dataset and tiny processors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic shapes dataset (images, mp4 videos, both formats)."""
    from vlaunch_core.data.synth import SynthSizes, synthesize

    folder = tmp_path_factory.mktemp("shapes")
    synthesize(folder, SynthSizes(train=24, eval=8, video_train=8, video_eval=4), seed=1)
    return folder


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache of tiny model folders (not the shared ~/.cache/vlaunch)."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_path(tiny_root: Path) -> Callable[[str], Path]:
    """`tiny_path(family)`: the folder of the tiny model of a family."""
    from trainer.models.tiny.folder import tiny_model_path

    return lambda family: tiny_model_path(family, root=tiny_root)


@pytest.fixture(scope="session")
def tiny_processor(tiny_path: Callable[[str], Path]) -> Callable[[str], Any]:
    """`tiny_processor(model_type)`: (processor, model description) of its tiny model."""
    from trainer.models.processors import load_processor
    from vlaunch_core.models.catalog import describe
    from vlaunch_core.spec import ModelSpec

    cache: dict[str, Any] = {}

    def get(family: str) -> Any:
        if family not in cache:
            description = describe(ModelSpec(name_or_path=f"tiny:{family}"))
            cache[family] = (load_processor(tiny_path(family)), description)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def styled_processor(
    tiny_path: Callable[[str], Path],
    tiny_processor: Callable[[str], Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, str | None], Any]:
    """`styled_processor(model_type, style)`: (processor, model description) of its tiny
    model with a released checkpoint's chat format (`tests/data/templates.py`: `vicuna`,
    `qwen`, `idefics3`, `paligemma`, `llama3`) in place of the tiny ChatML one; with style
    None, the tiny model's own (`tiny_processor`)."""
    from tests.data.templates import STYLES
    from tests.data.templates import styled_processor as make

    cache: dict[tuple[str, str], Any] = {}

    def get(model_type: str, style: str | None) -> Any:
        if style is None:
            return tiny_processor(model_type)
        key = (model_type, style)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{model_type}-{style}")
            processor = make(tiny_path(model_type), STYLES[style], out)
            cache[key] = (processor, tiny_processor(model_type)[1])
        return cache[key]

    return get


@pytest.fixture(scope="session")
def any_tiny(
    tiny_path: Callable[[str], Path], tiny_processor: Callable[[str], Any]
) -> Callable[[str], tuple[Path, Any]]:
    """`any_tiny(model_type)`: (folder, (processor, description)) of `tiny:<model_type>` (any
    architecture: derived from its own classes by `trainer.models.tiny`)."""
    return lambda model_type: (tiny_path(model_type), tiny_processor(model_type))
