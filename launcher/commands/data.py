"""`vlaunch data check ...` and `vlaunch data synth DIR`.

`data check` takes a job spec (both mixtures), a registry with a mixture, or one dataset (a
JSON file, Parquet, a `save_to_disk` folder, tar shards, or a hub id with `--source hf`),
and reports every problem in one pass. Exit status: 0 clean (warnings allowed), 1 when any
error was found, 2 for a bad invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from vlaunch_core.data.check import CheckReport, CheckSource, LengthCounter

logger = logging.getLogger(__name__)

MAX_SYNTH = 1_000_000
"""Samples per split `data synth` writes at most (each one is an image or a video file)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="report every problem of a dataset or mixture in one pass",
        description="Check a job's mixtures (JOB.yaml), a registry mixture (--registry FILE "
        "--mixture A+B) or one dataset file (DATASET --media-dir DIR). Exit 0 when clean, 1 "
        "when any error is found.",
    )
    check.add_argument(
        "target",
        nargs="?",
        metavar="JOB.yaml|DATASET",
        help="a job spec, or a dataset: .json/.jsonl, .parquet or a folder of them, a "
        "save_to_disk folder, .tar shards (brace patterns), or a hub id with --source hf",
    )
    check.add_argument(
        "--registry",
        action="append",
        default=[],
        metavar="FILE",
        help="registry YAML (repeatable); use with --mixture",
    )
    check.add_argument("--mixture", metavar="A+B*2", help="mixture of registry datasets")
    check.add_argument(
        "--media-dir",
        metavar="DIR",
        help="media root of a single dataset file (default: its folder)",
    )
    check.add_argument(
        "--format",
        choices=("auto", "vila", "messages"),
        default="auto",
        help="format of a single dataset file (default: per sample)",
    )
    check.add_argument(
        "--source",
        choices=("auto", "json", "parquet", "arrow", "webdataset", "hf"),
        default="auto",
        help="how to read a single DATASET (default: from the path; hf: a hub dataset id)",
    )
    check.add_argument(
        "--text-field",
        help="conversation column of a single DATASET (default: conversations / messages)",
    )
    check.add_argument(
        "--image-field", help="image column of a single DATASET (default: image / images)"
    )
    check.add_argument(
        "--video-field", help="video column of a single DATASET (default: video / videos)"
    )
    check.add_argument(
        "--data-split",
        metavar="SPLIT",
        help="split of a hub dataset or DatasetDict folder (default: train)",
    )
    check.add_argument("--config-name", metavar="NAME", help="configuration of a hub dataset")
    check.add_argument("--revision", metavar="REV", help="revision of a hub dataset")
    check.add_argument(
        "--split",
        choices=("train", "eval", "all"),
        default="all",
        help="with JOB.yaml: which mixture to check (default: both)",
    )
    check.add_argument(
        "--decode",
        action="store_true",
        help="also decode every image and sample every video (slower)",
    )
    check.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        help="count tokens with this model's processor (default: the job's)",
    )
    check.add_argument(
        "--max-length",
        type=int,
        metavar="N",
        help="token limit (default: the job's data.max_length)",
    )
    check.add_argument(
        "--overlength",
        choices=("truncate_text", "drop", "error"),
        help="policy for samples over the limit (default: the job's)",
    )
    check.add_argument(
        "--json", action="store_true", help='print {"problems": [...], "summary": {...}} as JSON'
    )
    check.add_argument(
        "--limit",
        type=int,
        default=50,
        metavar="N",
        help="problems printed per kind (0: all; --json always has all)",
    )
    synth = sub.add_parser(
        "synth",
        help="write the synthetic shapes dataset (images, mp4 videos, both formats)",
        description="Write the synthetic shapes dataset the demo and tests use.",
    )
    synth.add_argument("dir", metavar="DIR", help="output folder (e.g. examples/data/shapes)")
    synth.add_argument(
        "--if-missing", action="store_true", help="do nothing when DIR/meta.json already exists"
    )
    synth.add_argument("--train", type=int, default=800, metavar="N", help="training images")
    synth.add_argument("--eval", type=int, default=200, metavar="M", help="held-out images")
    synth.add_argument("--video-train", type=int, default=64, metavar="N", help="training videos")
    synth.add_argument("--video-eval", type=int, default=24, metavar="M", help="held-out videos")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument(
        "--formats",
        default="json",
        metavar="LIST",
        help="comma-separated: json (always), parquet (embedded images), webdataset (tar "
        "shards); default json",
    )


def run(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        return _synth(args)
    return _check(args)


# --------------------------------------------------------------------------- synth


def _synth(args: argparse.Namespace) -> int:
    from vlaunch_core.data.synth import FORMATS, SynthSizes, synthesize
    from vlaunch_core.errors import did_you_mean

    for name in ("train", "eval", "video_train", "video_eval"):
        if not 0 <= getattr(args, name) <= MAX_SYNTH:
            raise UserError(f"--{name.replace('_', '-')} must be from 0 to {MAX_SYNTH}")
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    for f in formats:
        if f not in FORMATS:
            raise UserError(
                f"--formats: unknown format '{f}'.{did_you_mean(f, FORMATS)}",
                hint=f"known: {', '.join(FORMATS)}",
            )
    meta_file = Path(args.dir) / "meta.json"
    before = meta_file.stat().st_mtime_ns if meta_file.is_file() else None
    sizes = SynthSizes(args.train, args.eval, args.video_train, args.video_eval)
    meta = synthesize(args.dir, sizes, seed=args.seed, if_missing=args.if_missing, formats=formats)
    if args.if_missing and before == meta.stat().st_mtime_ns:
        print(f"{args.dir}: already there ({meta.name} exists), nothing written")
    else:
        print(f"wrote the shapes dataset to {args.dir} (see {meta})")
    return 0


# --------------------------------------------------------------------------- check


def _is_job_spec(path: Path) -> bool:
    if path.suffix.lower() not in (".yaml", ".yml"):
        return False
    from vlaunch_core.yamlfile import read_yaml

    raw = read_yaml(path)
    return isinstance(raw, dict) and "data" in raw and "model" in raw


def _check(args: argparse.Namespace) -> int:
    # Libraries imported on the way (DeepSpeed via accelerate) print to stdout: keep stdout for
    # the report (and parseable with --json).
    with contextlib.redirect_stdout(sys.stderr):
        report = _run_check(args)
    if args.json:
        from launcher.commands.common import print_json

        print_json(report.to_json())
    else:
        _print_report(report, args.limit)
    return 0 if report.ok else 1


def _run_check(args: argparse.Namespace) -> CheckReport:
    from vlaunch_core.data.check import CheckOptions

    sources, data, model = _sources(args)
    max_length = (
        args.max_length
        if args.max_length is not None
        else (data.max_length if data is not None else None)
    )
    overlength = args.overlength or (data.overlength if data is not None else "truncate_text")
    model = args.model or model
    processor_family = _processor(model) if model else None
    family = processor_family[1] if processor_family else None
    options = CheckOptions(
        decode=args.decode,
        max_pixels=data.image.max_pixels if data else CheckOptions.max_pixels,
        max_length=max_length,
        overlength=overlength,
        num_frames=data.video.num_frames if data else CheckOptions.num_frames,
        fps=data.video.fps if data else None,
        max_frames=data.video.max_frames if data else CheckOptions.max_frames,
        system_prompt=data.system_prompt if data else None,
        videos_supported=family is None or family.supports_video or family.supports_multi_image,
        max_images=None if family is None else family.quirks.max_images,
    )
    if max_length is not None and not model:
        logger.info(
            "no model given: only samples certainly over %d tokens are flagged (use --model)",
            max_length,
        )
    counter = None
    if processor_family is not None and model is not None:
        from trainer.data.lengths import TokenCounter

        counter = TokenCounter(
            processor_family[0], model, options.system_prompt, options.max_images
        )
    return _with_progress(sources, options, counter, quiet=args.json)


def _sources(args: argparse.Namespace) -> tuple[list[CheckSource], Any, str | None]:
    """The files to check, the job's data options (or None) and its model (or None)."""
    from vlaunch_core.data.check import sources_from_mixture
    from vlaunch_core.data.mixture import resolve_mixture, resolve_registry_mixture

    if args.registry or args.mixture:
        if not (args.registry and args.mixture):
            raise UserError(
                "--registry and --mixture go together",
                hint="e.g. vlaunch data check --registry reg.yaml --mixture A+B*2",
            )
        if args.target:
            raise UserError("give either a target file or --registry/--mixture, not both")
        return (
            sources_from_mixture(resolve_registry_mixture(args.registry, args.mixture)),
            None,
            None,
        )
    if not args.target:
        raise UserError(
            "nothing to check",
            hint="vlaunch data check JOB.yaml | DATASET.json "
            "[--media-dir DIR] | --registry FILE --mixture A+B",
        )
    target = Path(args.target)
    if args.source == "hf":
        return (
            [_single(args, args.target, Path(args.media_dir) if args.media_dir else None)],
            None,
            None,
        )
    from vlaunch_core.data.sources.paths import is_pattern

    if not (target.exists() or is_pattern(args.target)):
        looks_like_id = args.target.count("/") == 1 and not target.suffix
        raise UserError(
            f"{target}: no such file or folder",
            hint=f"for a Hugging Face dataset id: --source hf {args.target}"
            if looks_like_id
            else None,
        )
    if target.is_file() and _is_job_spec(target):
        from vlaunch_core.spec_load import load_spec

        spec = load_spec(target)
        items = []
        if args.split in ("train", "all"):
            items += resolve_mixture(spec, "train")
        if args.split in ("eval", "all") and spec.data.eval_mixture:
            items += resolve_mixture(spec, "eval")
        return sources_from_mixture(items), spec.data, spec.model.name_or_path
    if target.suffix.lower() in (".yaml", ".yml"):
        raise UserError(
            f"{target} is not a job spec (no model: and data: keys)",
            hint=f"for a dataset registry: vlaunch data check --registry {target} --mixture "
            "NAME+NAME",
        )
    default_root = target if target.is_dir() else target.parent
    media = Path(args.media_dir) if args.media_dir else default_root
    if not media.is_dir():
        raise UserError(f"--media-dir {media}: no such folder")
    return [_single(args, args.target, media)], None, None


def _single(args: argparse.Namespace, target: str, media: Path | None) -> CheckSource:
    from vlaunch_core.data.check import CheckSource

    return CheckSource(
        Path(target).name,
        target,
        media,
        args.format,
        args.text_field,
        args.image_field,
        video_field=args.video_field,
        kind=args.source,
        split=args.data_split,
        config_name=args.config_name,
        revision=args.revision,
    )


def _hub() -> Any:
    """The hub-id resolver of the training stack (`datasets`; no torch)."""
    from trainer.data.hub import resolve_hub

    return resolve_hub


def _processor(model: str) -> tuple[Any, Any]:
    from trainer.data.processors import load_processor

    return load_processor(model)


def _with_progress(
    sources: list[CheckSource], options: Any, counter: LengthCounter | None, quiet: bool
) -> CheckReport:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from vlaunch_core.data.check import check_sources

    console = Console(stderr=True)
    hub = _hub()
    if quiet:
        return check_sources(sources, options, counter, hub=hub)
    total = sum(_bytes(s.data_path) for s in sources)
    if not console.is_terminal:  # piped: a line now, one every 30 s with the ETA, one at the end
        from trainer.progress import Steps

        with Steps(f"checking {len(sources)} file(s)", total, unit="bytes", tty=False) as steps:

            def advance(n: int) -> None:
                steps.update(steps.done + n)

            return check_sources(sources, options, counter, progress=advance, hub=hub)
    with Progress(
        TextColumn("checking"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("check", total=total or None)
        return check_sources(
            sources, options, counter, progress=lambda n: bar.advance(task, n), hub=hub
        )


def _bytes(data_path: Path | str) -> int:
    """Bytes under a data path (a file or a folder; 0 for patterns and hub ids)."""
    p = Path(data_path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return 0


def _print_report(report: CheckReport, limit: int) -> None:
    from rich.console import Console

    from launcher.output import Column, print_table
    from vlaunch_core.data.problems import KINDS

    out = Console(highlight=False, soft_wrap=True)
    by_kind: dict[str, list[Any]] = {}
    for p in report.problems:
        by_kind.setdefault(p.kind, []).append(p)
    for kind in sorted(by_kind, key=lambda k: list(KINDS).index(k) if k in KINDS else 99):
        items = by_kind[kind]
        sev = "warning" if all(p.severity == "warning" for p in items) else "error"
        colour = "yellow" if sev == "warning" else "red"
        out.print(f"[bold {colour}]{KINDS.get(kind, kind)}[/] ({kind}, {len(items)})")
        shown = items if limit <= 0 else items[:limit]
        for p in shown:
            out.print(f"  {p.render()}", markup=False)
        if len(shown) < len(items):
            out.print(f"  ... and {len(items) - len(shown)} more (--limit 0 or --json for all)")
    s = report.summary()
    sys.stdout.flush()
    columns = [Column("dataset", keep=True), Column("file", keep=True)]
    columns += [Column(c, right=True) for c in ("x", "samples", "images", "videos", "problems")]
    rows = [
        (
            d.name,
            _short(d.file),
            str(d.repeat),
            str(d.samples),
            str(d.images),
            str(d.videos),
            str(d.problems),
        )
        for d in report.datasets
    ]
    print_table("data check", columns, rows)
    tok = s["tokens"]
    if tok:
        out.print(
            f"tokens ({tok['model']}): p50 {tok['p50']}, p90 {tok['p90']}, "
            f"p99 {tok['p99']}, max {tok['max']} (max_length {s['max_length']}, "
            f"overlength: {s['overlength']}: {s['would_truncate']} would be truncated, "
            f"{s['would_drop']} dropped)"
        )
    else:
        out.print("tokens: not counted (give --model, or check a JOB.yaml)")
    verdict = "[bold green]OK[/]" if report.ok else "[bold red]FAILED[/]"
    out.print(
        f"{verdict}: {s['samples']} samples, {s['images']} images, {s['videos']} videos, "
        f"{s['errors']} errors in {s['samples_with_errors']} samples, "
        f"{s['warnings']} warnings ({s['seconds']} s"
        f"{', media decoded' if s['decoded'] else ', media headers only'})"
    )
    sys.stdout.flush()


def _short(path: str) -> str:
    """A path relative to the current folder when it lies under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path
