"""`vlaunch infer RUN_DIR_OR_MODEL (--image PATH | --video PATH) --prompt TEXT`.

Loads the base model with the run's adapter (or a merged / full model folder), prompts it
through the run's chat template and media options, and prints the greedy answer. `--batch
FILE.jsonl --output PRED.jsonl` answers every sample of a dataset file (VILA or
OpenAI-message format, media paths relative to the file) and writes one JSON line each.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="RUN_DIR_OR_MODEL",
        help="a run directory, a checkpoint, an adapter folder or a model folder",
    )
    parser.add_argument("--prompt", metavar="TEXT", help="the question")
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--image", metavar="PATH", action="append", default=[], help="an image")
    media.add_argument("--video", metavar="PATH", action="append", default=[], help="a video")
    parser.add_argument(
        "--batch", metavar="FILE.jsonl", help="answer every sample of this dataset file"
    )
    parser.add_argument(
        "--output", metavar="PRED.jsonl", help="with --batch: where the predictions go"
    )
    parser.add_argument(
        "--checkpoint",
        metavar="WHICH",
        default=None,
        help="final (default), latest or step-N of a run directory",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, metavar="N", help="answer length limit"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        metavar="T",
        help="sample at this temperature (default 0: greedy)",
    )
    parser.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling")
    parser.add_argument(
        "--batch-size", type=int, default=8, metavar="B", help="prompts generated together"
    )
    add_device_arguments(parser)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", metavar="DEV", help="auto (a GPU when there is one), cpu, cuda"
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="weights dtype (auto: bfloat16 on a GPU that has it, else float32)",
    )


def _check(args: argparse.Namespace) -> None:
    from vlaunch_core.errors import UserError

    if args.batch:
        if args.prompt or args.image or args.video:
            raise UserError(
                "--batch takes the questions and media from the file",
                hint="drop --prompt/--image/--video, or drop --batch",
            )
        if not args.output:
            raise UserError("--batch needs --output PRED.jsonl")
    elif not args.prompt:
        raise UserError("--prompt TEXT is required (or --batch FILE.jsonl)")
    elif args.output:
        raise UserError("--output applies to --batch")
    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be >= 1")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise UserError("--temperature must be >= 0 and --top-p in (0, 1]")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")


def run(args: argparse.Namespace) -> int:
    _check(args)
    from pathlib import Path

    from trainer.infer import load_predictor, read_prompts, single_prompt
    from trainer.trained import resolve

    trained = resolve(args.source, args.checkpoint)
    prompts = (
        read_prompts(Path(args.batch))
        if args.batch
        else [single_prompt(args.prompt, images=args.image, videos=args.video)]
    )
    if not args.batch:
        for path in (*args.image, *args.video):
            _require_file(Path(path))
    predictor = load_predictor(
        trained,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
    )
    if not args.batch:
        print(predictor.generate(prompts)[0])
        return 0
    answers = _with_progress(predictor, prompts, args.batch_size)
    _write_predictions(Path(args.output), prompts, answers)
    return 0


def _require_file(path: Any) -> None:
    from vlaunch_core.errors import UserError

    if not path.is_file():
        raise UserError(f"{path}: no such file", hint="check the --image / --video path")


def _with_progress(predictor: Any, prompts: list[Any], batch_size: int) -> list[str]:
    from rich.progress import Progress

    answers: list[str] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("generating", total=len(prompts))
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            answers += predictor.generate(chunk, batch_size=batch_size)
            progress.advance(task, len(chunk))
    return answers


def _write_predictions(out: Any, prompts: list[Any], answers: list[str]) -> None:
    import json

    from trainer.evaluate import normalise

    out.parent.mkdir(parents=True, exist_ok=True)
    scored = correct = 0
    with out.open("w", encoding="utf-8") as f:
        for p, answer in zip(prompts, answers, strict=True):
            record: dict[str, Any] = {"index": p.sample.index, "id": p.sample.id}
            record["prediction"] = answer
            if p.reference is not None:
                ok = normalise(answer) == normalise(p.reference)
                record.update(reference=p.reference, exact_match=ok)
                scored += 1
                correct += ok
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    line = f"{len(answers)} predictions written to {out}"
    if scored:
        line += f"; exact match {correct}/{scored} ({correct / scored:.1%}) against the answers"
    print(line)
