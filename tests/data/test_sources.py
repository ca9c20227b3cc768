"""Every source kind: `data check` passes clean data and finds planted faults with their
shard and row; sources read back what they stream; tar shards are WebDataset's; hub ids
resolve from a Hugging Face cache; column mappings are suggested; certainly-too-long samples
are flagged without a model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.data.source_fixtures import BUILDERS, HUB_ID, Built, build
from tests.trainer.helpers import child_env
from vlaunch_core.data.check import CheckOptions, CheckSource, check_sources
from vlaunch_core.data.registry import Dataset
from vlaunch_core.data.sources import Source, SourceError, open_source
from vlaunch_core.spec import DatasetEntry


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlaunch_core.data.synth import SynthSizes, synthesize

    folder = tmp_path_factory.mktemp("shapes")
    synthesize(folder, SynthSizes(train=24, eval=4, video_train=2, video_eval=1), seed=2)
    return folder


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory, shapes: Path) -> dict[str, Built]:
    """Clean and faulty datasets of every kind: {"parquet": ..., "parquet-faults": ...}."""
    root = tmp_path_factory.mktemp("datasets")
    out = {}
    for kind in BUILDERS:
        out[kind] = build(kind, shapes, root / "clean")
        out[f"{kind}-faults"] = build(kind, shapes, root / "faults", faults=True)
    return out


@pytest.fixture
def hub_cache(datasets: dict[str, Built]) -> Iterator[None]:
    """This process sees the clean hub dataset's HF cache (as HF_HOME would)."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        home = datasets["hub"].env["HF_HOME"]
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(Path(home) / "hub"))
        yield


def _check(built: Built, name: str = "d") -> Any:
    from trainer.data.hub import resolve_hub

    e = built.entry
    src = CheckSource(
        name, e["data_path"], Path(e["media_dir"]), kind=e.get("source", "auto"),
        split=e.get("split"),
    )  # fmt: skip
    return check_sources([src], CheckOptions(decode=True), hub=resolve_hub)


def _source(built: Built) -> Source:
    from trainer.data.hub import resolve_hub

    return open_source(Dataset("d", DatasetEntry.model_validate(built.entry), "test"), resolve_hub)


@pytest.mark.parametrize("kind", BUILDERS)
def test_clean_data_passes_with_its_counts(
    kind: str, datasets: dict[str, Built], hub_cache: None
) -> None:
    built = datasets[kind]
    report = _check(built)
    assert report.problems == []
    s = report.summary()
    assert (s["samples"], s["images"], s["videos"]) == (built.samples, built.images, 1)
    assert built.images == built.samples - 1  # one video, the rest one image each


@pytest.mark.parametrize("kind", BUILDERS)
def test_planted_faults_are_found_with_shard_and_row(
    kind: str, datasets: dict[str, Built], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    built = datasets[f"{kind}-faults"]
    if kind == "hub":
        home = Path(built.env["HF_HOME"])
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    report = _check(built)
    found = {(p.kind, Path(p.file).name, p.index) for p in report.problems}
    assert found == built.expected
    assert len(built.expected) >= 4 and not report.ok


@pytest.mark.parametrize("kind", BUILDERS)
def test_a_source_reads_back_what_it_streams(
    kind: str, datasets: dict[str, Built], hub_cache: None
) -> None:
    source = _source(datasets[kind])
    streamed = [(r.shard, r.index, _plain(r.value)) for r in source.rows()]
    assert len(streamed) == len(source) == datasets[kind].samples
    read = []
    for j in range(len(source)):
        r = source.read(j)
        read.append((r.shard, r.index, _plain(r.value)))
        assert source.where(j) == (r.shard, r.index)
    assert read == streamed
    assert len(source.shards()) >= 2


def _plain(value: Any) -> str:
    return json.dumps(value, default=repr, sort_keys=True)


def test_hub_dataset_resolves_from_the_cache_in_place(
    datasets: dict[str, Built], hub_cache: None
) -> None:
    from trainer.data.hub import resolve_hub

    found = resolve_hub(DatasetEntry(data_path=HUB_ID, source="hf"))
    assert found.kind == "parquet"
    assert [Path(f).name for f in found.files] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert "/hub/datasets--vlaunch-tests--shapes-mixed/snapshots/" in found.files[0]
    test = resolve_hub(DatasetEntry(data_path=HUB_ID, source="hf", split="test"))
    assert len(test.files) == 2  # two rows, two shards
    with pytest.raises(SourceError, match="no split 'validation'"):
        resolve_hub(DatasetEntry(data_path=HUB_ID, source="hf", split="validation"))
    with pytest.raises(SourceError, match="not in the local Hugging Face cache") as e:
        resolve_hub(DatasetEntry(data_path="nobody/nothing", source="hf"))
    assert "hf download --repo-type dataset nobody/nothing" in str(e.value.hint)


def test_tar_shards_are_webdataset_shards(tmp_path: Path, shapes: Path) -> None:
    """`webdataset` reads the shards `data synth` writes, and we read `webdataset`'s own."""
    import webdataset as wds

    from vlaunch_core.data.formats import Fields
    from vlaunch_core.data.sources.tar import TarSource
    from vlaunch_core.data.synth import SynthSizes, synthesize

    folder = tmp_path / "synth"
    synthesize(
        folder, SynthSizes(train=70, eval=2, video_train=1, video_eval=1), formats=("webdataset",)
    )
    ours = TarSource("t", str(folder / "shards" / "train-{0000..0001}.tar"), Fields(), folder)
    theirs = list(wds.WebDataset(ours.files, shardshuffle=False))
    assert [s["__key__"] for s in theirs] == [r.value["__key__"] for r in ours.rows()]
    assert all(set(s) >= {"json"} for s in theirs) and len(theirs) == 70
    image = theirs[0].get("png", theirs[0].get("jpg"))
    assert json.loads(theirs[0]["json"])["image"] in ("png", "jpg") and image[:4] in (
        b"\x89PNG",
        b"\xff\xd8\xff\xe0",
    )

    pattern = str(tmp_path / "wds-%04d.tar")
    with wds.ShardWriter(pattern, maxcount=3) as sink:
        for i in range(7):
            png = io.BytesIO()
            from PIL import Image

            Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(png, "PNG")
            record = {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": "c?"}],
                    },
                    {"role": "assistant", "content": "red"},
                ]
            }
            sink.write({"__key__": f"s{i:03d}", "json": record, "png": png.getvalue()})
    written = TarSource("w", str(tmp_path / "wds-{0000..0002}.tar"), Fields(), tmp_path)
    assert [s.rows for s in written.shards()] == [3, 3, 1]
    report = check_sources(
        [CheckSource("w", str(tmp_path / "wds-{0000..0002}.tar"), tmp_path)],
        CheckOptions(decode=True),
    )
    assert report.problems == [] and report.summary()["images"] == 7


def test_wids_index_counts_without_opening_shards(tmp_path: Path, shapes: Path) -> None:
    from vlaunch_core.data.formats import Fields
    from vlaunch_core.data.sources.tar import TarSource
    from vlaunch_core.data.synth import TAR_SHARD_SAMPLES, SynthSizes, synthesize

    folder = tmp_path / "synth"
    synthesize(
        folder, SynthSizes(train=150, eval=2, video_train=1, video_eval=1), formats=("webdataset",)
    )
    source = TarSource("t", str(folder / "shards" / "train.wids.json"), Fields(), folder)
    assert len(source) == 150 and source.blocks() == [TAR_SHARD_SAMPLES] * 2 + [22]
    assert source.opened == set() and not source._cache_index  # counted from the index
    source.read(140)
    assert source.opened == {source.files[2]}  # reading one sample opens its shard only


def test_synth_formats_hold_the_same_samples(tmp_path: Path) -> None:
    from vlaunch_core.data.synth import SynthSizes, synthesize

    folder = tmp_path / "synth"
    meta = synthesize(
        folder, SynthSizes(train=20, eval=4, video_train=2, video_eval=1),
        formats=("json", "parquet", "webdataset"),
    )  # fmt: skip
    files = json.loads(meta.read_text())["files"]
    assert files["parquet/train.parquet"] == files["shards/train.wids.json"] == 20
    sources = [
        CheckSource("json", folder / "kinds_train.jsonl", folder),
        CheckSource("parquet", folder / "parquet" / "kinds_train.parquet", folder),
        CheckSource("tar", folder / "shards" / "video_train.wids.json", folder, kind="webdataset"),
        CheckSource("vtar", folder / "shards" / "train-{0000..0000}.tar", folder),
    ]
    report = check_sources(sources, CheckOptions(decode=True))
    assert report.problems == []
    counts = [(d.samples, d.images, d.videos) for d in report.datasets]
    assert counts[0] == counts[1] and counts[2] == (2, 0, 2) and counts[3] == (20, 20, 0)


def test_column_mapping_is_suggested_once(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    rows = [
        {
            "id": str(i),
            "msgs": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "c?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
            ],
            "pics": ["a.png"],
        }
        for i in range(6)
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        report = check_sources([CheckSource("d", tmp_path / name, tmp_path)], CheckOptions())
        (problem,) = report.problems
        assert problem.kind == "column_mapping" and problem.index == 0
        assert "6 of 6 samples have no 'conversations' or 'messages' column" in problem.message
        assert "text_field: msgs, image_field: pics" in problem.message
        mapped = CheckSource("d", tmp_path / name, tmp_path, text_field="msgs", image_field="pics")
        assert check_sources([mapped], CheckOptions(decode=True)).problems == []


def test_certainly_too_long_without_a_model(tmp_path: Path) -> None:
    long = "word " * 20_000  # 100,000 bytes: at least 1,563 tokens whatever the tokenizer
    rows = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ok"}]},
        {"conversations": [{"from": "human", "value": long}, {"from": "gpt", "value": "ok"}]},
    ]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    src = [CheckSource("d", tmp_path / "d.json", tmp_path)]
    (p,) = check_sources(src, CheckOptions(max_length=1024, overlength="error")).problems
    assert (p.kind, p.index, p.severity) == ("too_long", 1, "error")
    assert "at least 1563 tokens" in p.message
    assert check_sources(src, CheckOptions(max_length=2048)).problems == []


def test_data_check_cli_on_a_hub_id_and_tar_shards(datasets: dict[str, Built]) -> None:
    hub = datasets["hub-faults"]
    out = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "data", "check", HUB_ID, "--source", "hf",
         "--media-dir", hub.entry["media_dir"], "--json"],
        env=child_env(**hub.env), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    found = {
        (p["kind"], Path(p["file"]).name, p["index"]) for p in json.loads(out.stdout)["problems"]
    }
    assert found == hub.expected
    tar = datasets["webdataset"]
    out = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "data", "check", tar.entry["data_path"],
         "--media-dir", tar.entry["media_dir"]],
        env=child_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"OK: {tar.samples} samples, {tar.images} images, 1 videos" in out.stdout


@pytest.mark.parametrize("kind", ["parquet", "webdataset"])
def test_length_estimates_of_a_sharded_source(kind: str, datasets: dict[str, Built]) -> None:
    """For the length-grouped sampler: one per record, positive (every sample has media),
    read without the media columns where the source allows."""
    from trainer.data.dataset import _source_lengths

    source = _source(datasets[kind])
    lengths = _source_lengths(
        source, Dataset("d", DatasetEntry.model_validate(datasets[kind].entry), "t")
    )
    assert len(lengths) == len(source) and all(n > 0 for n in lengths)


def test_hub_ids_stay_ids_and_paths_become_absolute(tmp_path: Path) -> None:
    from vlaunch_core.data.registry import read_registry
    from vlaunch_core.spec_load import load_spec

    (tmp_path / "reg.yaml").write_text(
        "hub: {data_path: HuggingFaceH4/llava-instruct-mix-vsft, source: hf}\n"
        "tar: {data_path: 'shards/train-{0000..0009}.tar'}\n"
    )
    found, problems = read_registry(tmp_path / "reg.yaml")
    assert problems == []
    assert found["hub"].entry.data_path == "HuggingFaceH4/llava-instruct-mix-vsft"
    assert found["tar"].entry.data_path == str(tmp_path / "shards" / "train-{0000..0009}.tar")
    assert found["tar"].media_dir == tmp_path / "shards"
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: j\nmodel: {name_or_path: tiny:llava}\n"
        "data:\n  mixture: hub+pq\n  datasets:\n"
        "    hub: {data_path: ORG/NAME, source: hf, split: test}\n"
        "    pq: {data_path: data/parquet}\n"
    )
    spec = load_spec(job)
    assert spec.data.datasets["hub"].data_path == "ORG/NAME"
    assert spec.data.datasets["pq"].data_path == str(tmp_path / "data" / "parquet")
