"""`vlaunch export RUN_DIR (--merge OUT | --adapter-only OUT | --llm-only-adapter OUT)`.

- `--merge OUT`: LoRA merged into the base weights, with every other trained weight (the
  projector, norms, LLaVA-NeXT's image_newline): a standard transformers folder that
  `AutoModelForImageTextToText.from_pretrained(OUT)` loads without vlaunch or PEFT.
- `--adapter-only OUT`: a clean PEFT adapter (`adapter_config.json`,
  `adapter_model.safetensors`, README) naming the base model; tensors checked whole.
- `--llm-only-adapter OUT`: only the language model's LoRA (vLLM); refuses when the run also
  trained the vision tower or the projector, unless `--drop-non-llm`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="RUN_DIR",
        help="a run directory, one of its checkpoints, or an adapter folder",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--merge", metavar="OUT", help="write a merged transformers model folder")
    what.add_argument("--adapter-only", metavar="OUT", help="write a clean PEFT adapter folder")
    what.add_argument(
        "--llm-only-adapter",
        metavar="OUT",
        help="write a PEFT adapter with the language model's LoRA only (vLLM)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="WHICH",
        default=None,
        help="final (default: the run's final export, else its latest checkpoint), latest, "
        "or step-N",
    )
    parser.add_argument(
        "--drop-non-llm",
        action="store_true",
        help="with --llm-only-adapter: drop vision-tower LoRA and weights trained in full "
        "(the served model then differs from the trained one)",
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="with --merge: dtype of the saved weights (auto: the base checkpoint's)",
    )
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trainer.trained import resolve
    from vlaunch_core.errors import UserError

    if args.drop_non_llm and not args.llm_only_adapter:
        raise UserError("--drop-non-llm only applies to --llm-only-adapter")
    if args.dtype != "auto" and not args.merge:
        raise UserError("--dtype only applies to --merge")
    trained = resolve(args.source, args.checkpoint)
    if args.merge:
        from trainer.export import export_merged

        out = export_merged(trained, Path(args.merge), dtype=args.dtype, force=args.force)
        print(f"merged model: {out}")
        print(f"  load it with AutoModelForImageTextToText.from_pretrained('{out}')")
        return 0
    from trainer.adapter_export import export_adapter

    result = export_adapter(
        trained,
        Path(args.adapter_only or args.llm_only_adapter),
        llm_only=bool(args.llm_only_adapter),
        drop_non_llm=args.drop_non_llm,
        force=args.force,
    )
    kind = "LLM-only adapter" if args.llm_only_adapter else "adapter"
    print(f"{kind}: {result.out} ({result.tensors} tensors)")
    if result.dropped:
        print(f"  dropped (not on the language model): {', '.join(result.dropped[:8])}")
    return 0
