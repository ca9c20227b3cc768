"""VILA-style registry YAMLs, mixtures with `+` and `*N`, and their validation in the spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vlaunch_core.data.mixture import mixture_problems, parse_mixture, resolve_mixture
from vlaunch_core.data.registry import read_registry
from vlaunch_core.errors import ProblemReport
from vlaunch_core.spec_load import load_spec, spec_from_dict

REGISTRY = """\
SampleQA:
    _target_: llava.data.LLaVADataset
    data_path: sample-qa/dataset.json
    media_dir: sample-qa
SampleVideo:
    _target_: llava.data.LLaVADataset
    data_path: /dataset/vila-dataset/sample-video/dataset.json
    media_dir: /dataset/vila-dataset/sample-video
    is_video: true
SampleMessages:
    data_path: msgs/train.jsonl
    format: messages
    text_field: conv
    image_field: pics
    num_frames: 4
"""


def job(
    tmp_path: Path,
    mixture: str,
    eval_mixture: str | None = None,
    registry: str = "reg.yaml",
    **data: object,
) -> Path:
    spec = {
        "name": "t",
        "model": {"name_or_path": "tiny:llava"},
        "data": {"registry": [registry], "mixture": mixture, **data},
        "resources": {"profile": "cpu", "gpus_per_node": 1},
        "train": {"global_batch_size": 4},
    }
    if eval_mixture is not None:
        spec["data"]["eval_mixture"] = eval_mixture  # type: ignore[index]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def reg(tmp_path: Path) -> Path:
    (tmp_path / "reg.yaml").write_text(REGISTRY)
    return tmp_path / "reg.yaml"


def test_registry_entries_resolve_relative_to_the_registry_file(reg: Path) -> None:
    datasets, problems = read_registry(reg)
    assert problems == []
    qa, video, msgs = datasets["SampleQA"], datasets["SampleVideo"], datasets["SampleMessages"]
    assert qa.data_path == reg.parent / "sample-qa" / "dataset.json"
    assert qa.media_dir == reg.parent / "sample-qa"
    assert qa.entry.target == "llava.data.LLaVADataset"
    assert video.entry.is_video and video.media_dir == Path("/dataset/vila-dataset/sample-video")
    assert msgs.media_dir == reg.parent / "msgs"  # default: the folder of data_path
    assert (
        msgs.entry.format,
        msgs.entry.text_field,
        msgs.entry.image_field,
        msgs.entry.num_frames,
    ) == ("messages", "conv", "pics", 4)


def test_registry_problems_name_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("A:\n  data_pth: x.json\nB: just-a-string\nC:\n  data_path: c.json\n")
    datasets, problems = read_registry(bad)
    assert list(datasets) == ["C"]
    text = "\n".join(p.render() for p in problems)
    assert "A.data_pth" in text and "Did you mean 'data_path'" in text
    assert "B" in text
    _, problems = read_registry(tmp_path / "missing.yaml")
    assert "no such registry file" in problems[0].message


def test_parse_mixture() -> None:
    terms, errors = parse_mixture("SampleQA+SampleVideo*2 + SampleOCR")
    assert errors == []
    assert [(t.name, t.repeat) for t in terms] == [
        ("SampleQA", 1),
        ("SampleVideo", 2),
        ("SampleOCR", 1),
    ]
    for bad in ("A*0", "A*x", "A*-1", "A+", "+A", "A*1.5"):
        assert parse_mixture(bad)[1], bad


def test_mixture_resolves_repeats(tmp_path: Path, reg: Path) -> None:
    spec = load_spec(job(tmp_path, "SampleQA+SampleVideo*2", "SampleMessages"))
    items = resolve_mixture(spec, "train")
    assert [(i.dataset.name, i.repeat) for i in items] == [("SampleQA", 1), ("SampleVideo", 2)]
    assert [i.dataset.name for i in resolve_mixture(spec, "eval")] == ["SampleMessages"]


def test_validation_needs_registry_but_not_data_files(tmp_path: Path, reg: Path) -> None:
    """`vlaunch plan` works before the data is synthesised: no data file exists here."""
    spec = load_spec(job(tmp_path, "SampleQA+SampleVideo*3"))
    assert mixture_problems(spec) == []


def test_unknown_names_and_bad_repeats_are_reported_together(tmp_path: Path, reg: Path) -> None:
    with pytest.raises(ProblemReport) as e:
        load_spec(job(tmp_path, "SampleQQ+SampleVideo*0", "SampelVideo"))
    text = e.value.render()
    assert "data.mixture: unknown dataset 'SampleQQ'. Did you mean 'SampleQA'" in text
    assert "known datasets: SampleMessages, SampleQA, SampleVideo" in text
    assert "'SampleVideo*0': the repeat count" in text
    assert "data.eval_mixture: unknown dataset 'SampelVideo'. Did you mean 'SampleVideo'" in text


def test_missing_registry_file_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ProblemReport) as e:
        load_spec(job(tmp_path, "A", registry="nope.yaml"))
    assert "nope.yaml" in e.value.render() and "no such registry file" in e.value.render()


def test_inline_datasets_override_registry(tmp_path: Path, reg: Path) -> None:
    raw = yaml.safe_load(job(tmp_path, "SampleQA").read_text())
    raw["data"]["datasets"] = {"SampleQA": {"data_path": "inline/qa.jsonl"}}
    spec = spec_from_dict(raw, base_dir=tmp_path)
    item = resolve_mixture(spec)[0]
    assert item.dataset.origin == "data.datasets"
    assert item.dataset.data_path == tmp_path / "inline" / "qa.jsonl"


def test_example_registry_and_demo_validate(repo: Path) -> None:
    spec = load_spec(repo / "examples" / "demo.yaml")
    assert mixture_problems(spec) == []
    datasets, problems = read_registry(repo / "examples" / "registry.yaml")
    assert problems == []
    assert {"shapes_train", "shapes_eval"} <= set(datasets)
