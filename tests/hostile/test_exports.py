"""`vlaunch export` never deletes or replaces what it did not write: `--merge OUT --force`
with OUT = the runs' parent deleted every run, OUT = the run replaced it. Each refusal:
exit 2, one message, the whole folder tree unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.helpers import assert_refused, cli, tree
from trainer.outputs import EXPORT_MARK

pytestmark = pytest.mark.timeout(180, func_only=True)

FLAGS = ("--merge", "--adapter-only", "--llm-only-adapter")


def _targets(finished: Path) -> dict[str, Path]:
    run = finished / "runs" / "victim"
    other = finished / "runs" / "unrelated"
    other.mkdir()
    (other / "spec.yaml").write_text("name: unrelated\n")
    (other / "status.json").write_text('{"state": "finished"}\n')
    foreign = finished / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    link = finished / "link-to-run"
    link.symlink_to(run)
    return {
        "runs-parent": finished / "runs",
        "the-run": run,
        "inside-the-run": run / "merged",
        "a-checkpoint": run / "checkpoint_000002",
        "inside-a-checkpoint": run / "checkpoint_000002" / "adapter",
        "the-adapter": run / "adapter",
        "grandparent": finished,
        "foreign-folder": foreign,
        "symlink-to-run": link,
    }


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("force", [True, False], ids=["force", "no-force"])
def test_export_never_overwrites_runs_checkpoints_or_foreign_folders(
    finished_run: Path, flag: str, force: bool
) -> None:
    run = finished_run / "runs" / "victim"
    targets = _targets(finished_run)
    before = tree(finished_run)
    for what, out in targets.items():
        argv = ["export", str(run), flag, str(out), *(["--force"] if force else [])]
        if flag == "--llm-only-adapter":
            argv.append("--drop-non-llm")
        result = cli(*argv)
        assert_refused(result)
        assert tree(finished_run) == before, what


def test_a_file_is_never_an_export_target(finished_run: Path) -> None:
    run = finished_run / "runs" / "victim"
    target = finished_run / "notes.txt"
    target.write_text("mine")
    before = tree(finished_run)
    assert_refused(cli("export", str(run), "--merge", str(target), "--force"), "is a file")
    assert tree(finished_run) == before


def test_force_replaces_an_earlier_export_only(finished_run: Path) -> None:
    run = finished_run / "runs" / "victim"
    out = finished_run / "exports" / "victim-adapter"
    neighbour = finished_run / "exports" / ".victim-adapter.tmp"  # the old staging name
    neighbour.mkdir(parents=True)
    (neighbour / "keep").write_text("not vlaunch's")
    first = cli("export", str(run), "--adapter-only", str(out))
    assert first.code == 0, first
    mark = json.loads((out / EXPORT_MARK).read_text())
    assert mark["kind"] == "adapter"
    assert_refused(cli("export", str(run), "--adapter-only", str(out)), "--force")
    again = cli("export", str(run), "--adapter-only", str(out), "--force")
    assert again.code == 0, again
    assert (neighbour / "keep").read_text() == "not vlaunch's"
    leftovers = [p.name for p in out.parent.iterdir() if p.name not in (out.name, neighbour.name)]
    assert leftovers == [], leftovers
    (out / EXPORT_MARK).unlink()  # no longer recognisable as an export: never replaced
    before = tree(finished_run)
    assert_refused(cli("export", str(run), "--adapter-only", str(out), "--force"), EXPORT_MARK)
    assert tree(finished_run) == before


def test_an_export_into_an_empty_folder_is_fine(finished_run: Path) -> None:
    run = finished_run / "runs" / "victim"
    out = finished_run / "empty"
    out.mkdir()
    result = cli("export", str(run), "--adapter-only", str(out))
    assert result.code == 0, result
    assert (out / "adapter_config.json").is_file() and (out / EXPORT_MARK).is_file()
