"""`vlaunch export --adapter-only` and `--llm-only-adapter`: clean PEFT adapter folders.

Every tensor is checked before anything is written: LoRA matrices must be 2-D and non-empty
(an adapter saved from an FSDP or ZeRO-3 run without gathering holds empty or flattened
shards, which vLLM crashes on, vllm#28640), and, when the base model's parameter table is
known, `lora_A` must be `(r, in_features)` and `lora_B` `(out_features, r)` of the module
they adapt.

`--llm-only-adapter` keeps only the language model's LoRA, for servers that take LoRA on the
language model only (vLLM, vllm#16364). A run that also trained something else (LoRA on the
vision tower, the projector or norms in full) cannot be served that way without changing the
model: the export refuses and says what would be lost, unless `drop_non_llm` is given.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.checkpoint import NON_LORA_FILE, spec_yaml
from trainer.export import (
    adapter_readme,
    base_reference,
    load_base_processor,
    write_processor,
)
from trainer.outputs import check_export_target, mark_export, replace_export, staging_dir
from trainer.trained import ADAPTER_CONFIG, ADAPTER_WEIGHTS, SPEC_FILE, Trained, read_adapter_config
from vlaunch_core.errors import UserError
from vlaunch_core.models.description import canonical_name

if TYPE_CHECKING:
    import torch

    from vlaunch_core.models.description import ModelDescription
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)

_LORA = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_magnitude_vector)(?:\..+)?$")


@dataclass
class AdapterExport:
    out: Path
    tensors: int
    dropped: list[str] = field(default_factory=list)
    """What `--drop-non-llm` left out (module names)."""


def module_of_key(key: str) -> tuple[str, str | None]:
    """(module name in the bare model, LoRA kind or None) of an adapter tensor key."""
    name = key.removeprefix("base_model.model.")
    m = _LORA.match(name)
    if m is None:
        return canonical_name(name.rsplit(".", 1)[0]), None
    return canonical_name(m.group("module")), m.group("kind")


def check_tensors(
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    where: Path,
    family: ModelDescription | None,
) -> None:
    """Raise a UserError naming every tensor that is empty, flattened or mis-shaped."""
    shapes = _base_shapes(config, family)
    bad: list[str] = []
    for key, t in tensors.items():
        module, kind = module_of_key(key)
        if t.numel() == 0:
            bad.append(f"{key}: empty {tuple(t.shape)}")
            continue
        if kind in ("lora_A", "lora_B") and t.ndim != 2:
            bad.append(f"{key}: {t.ndim}-D {tuple(t.shape)}, a LoRA matrix is 2-D")
            continue
        base = shapes.get(f"{module}.weight")
        if kind is None or base is None or len(base) != 2:
            continue
        r = _rank(config, module)
        want = (r, base[1]) if kind == "lora_A" else (base[0], r)
        if kind != "lora_magnitude_vector" and tuple(t.shape) != want:
            bad.append(f"{key}: shape {tuple(t.shape)}, expected {want}")
    if bad:
        raise UserError(
            f"{where}: {len(bad)} adapter tensor(s) are not whole LoRA weights: "
            + "; ".join(bad[:5]),
            hint="the adapter was saved from a sharded (FSDP / ZeRO-3) run without gathering "
            "its weights, or belongs to another base model; export from a vlaunch checkpoint "
            "of the run (`--checkpoint latest`), which holds gathered weights",
        )


def _rank(config: dict[str, Any], module: str) -> int:
    for pattern, r in (config.get("rank_pattern") or {}).items():
        if re.search(pattern, module):
            return int(r)
    return int(config["r"])


def _base_shapes(
    config: dict[str, Any], family: ModelDescription | None
) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the base model (its description: no weights loaded); {} if
    unknown."""
    if family is None:
        return {}
    return {p.name: p.shape for p in family.params}


def export_adapter(
    trained: Trained,
    out: Path,
    *,
    llm_only: bool = False,
    drop_non_llm: bool = False,
    force: bool = False,
) -> AdapterExport:
    """Write a PEFT adapter folder at `out` (README and the run's spec included)."""
    from safetensors.torch import load_file, save_file

    if trained.adapter is None:
        raise _no_adapter(trained)
    out = check_export_target(out, force=force, sources=trained.sources())
    config = read_adapter_config(trained.adapter)
    if trained.spec is not None:
        config["base_model_name_or_path"] = base_reference(trained.spec)
        config["revision"] = trained.spec.model.revision
    try:
        family: ModelDescription | None = family_of(trained)
    except UserError:
        if llm_only:  # which modules are the language model's is needed
            raise
        family = None  # a base whose config is not here: no shape table, 2-D checks only
    tensors = load_file(str(trained.adapter / ADAPTER_WEIGHTS))
    check_tensors(tensors, config, trained.adapter / ADAPTER_WEIGHTS, family)
    non_lora = trained.non_lora
    dropped: list[str] = []
    if llm_only:
        assert family is not None
        tensors, config, dropped = _llm_only(tensors, config, family, non_lora, drop_non_llm)
        non_lora = None
    config["inference_mode"] = True
    base = trained.base_model_spec()
    processor = load_base_processor(base)  # before anything is written
    staging = staging_dir(out)
    try:
        (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(staging / ADAPTER_WEIGHTS),
            metadata={"format": "pt"},
        )
        if non_lora is not None:
            shutil.copyfile(non_lora, staging / NON_LORA_FILE)
        write_processor(base, staging, processor)
        if trained.spec is not None:
            (staging / SPEC_FILE).write_text(spec_yaml(trained.spec))
            readme = adapter_readme(trained.spec, out, has_non_lora=non_lora is not None)
            if llm_only:
                readme += _llm_only_note(trained.spec, out, config, dropped)
            (staging / "README.md").write_text(readme)
        mark_export(staging, "llm-only-adapter" if llm_only else "adapter", trained.path)
        replace_export(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return AdapterExport(out, len(tensors), dropped)


def family_of(trained: Trained) -> ModelDescription:
    """The description of the run's base model (built on the meta device)."""
    from trainer.models.describe import describe_spec

    return describe_spec(trained.base_model_spec())


def _no_adapter(trained: Trained) -> UserError:
    if trained.model is not None:
        return UserError(
            f"{trained.path}: the final export is a full model ({trained.model.name}/), not an "
            "adapter (full fine-tuning, or output.export=merged)",
            hint="use --merge OUT, or --checkpoint latest to export a LoRA run's checkpoint",
        )
    return UserError(
        f"{trained.path}: these weights have no LoRA adapter (full fine-tuning trains every "
        "weight itself)",
        hint="use --merge OUT for a complete model folder",
    )


def _llm_only(
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    family: ModelDescription,
    non_lora: Path | None,
    drop: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str]]:
    """Only the language model's LoRA tensors, with a config that targets only them."""
    keep: dict[str, torch.Tensor] = {}
    vision: set[str] = set()
    full: set[str] = set()
    modules: set[str] = set()
    for key, t in tensors.items():
        module, kind = module_of_key(key)
        part = family.module_of(module)
        if kind is not None and part == "language_model":
            keep[key] = t
            modules.add(module)
        elif kind is not None:
            vision.add(module)
        else:
            roots = [r for r in config.get("modules_to_save") or [] if _under(module, r)]
            full.add(roots[0] if roots else module)
    if non_lora is not None:
        from safetensors import safe_open

        with safe_open(str(non_lora), "pt") as f:
            full |= {module_of_key(k)[0] for k in f.keys()}  # noqa: SIM118 - not a dict
    if not keep:
        raise UserError(
            "the run trained no LoRA on the language model: there is nothing for an "
            "LLM-only adapter to hold",
            hint="use --merge OUT (a complete model) or --adapter-only OUT",
        )
    lost = []
    if vision:
        lost.append(f"LoRA on the vision tower ({len(vision)} modules, e.g. {min(vision)})")
    if full:
        lost.append(f"weights trained in full outside LoRA: {', '.join(sorted(full)[:6])}")
    if lost and not drop:
        raise UserError(
            "an LLM-only adapter cannot hold everything this run trained: "
            + "; ".join(lost)
            + ". A server that applies LoRA to the language model only would run the base "
            "model's versions of these, i.e. a different model from the one trained",
            hint="serve a merged model instead (--merge OUT), or pass --drop-non-llm to drop "
            "them knowingly; to train LLM-only adapters, set tuning.vision_tower=frozen and "
            "tuning.projector=frozen",
        )
    if lost:
        logger.warning("LLM-only adapter: dropping %s", "; ".join(lost))
    config = dict(config)
    config["target_modules"] = _targets_regex(modules)
    config["modules_to_save"] = None
    config["exclude_modules"] = None
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(key) or {}
        config[key] = {k: v for k, v in pattern.items() if any(re.search(k, m) for m in modules)}
    alpha = config.get("lora_alpha")
    if isinstance(alpha, float) and alpha.is_integer():
        config["lora_alpha"] = int(alpha)  # vLLM's PEFTHelper types it int
    return keep, config, sorted(vision | full)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _targets_regex(modules: set[str]) -> str:
    """A full-match regex for exactly these modules, layer numbers generalised."""
    shapes = sorted({re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(m)) for m in modules})
    regex = "|".join(f"(?:{s})" for s in shapes)
    pattern = re.compile(regex)
    assert all(pattern.fullmatch(m) for m in modules)
    return regex


def _llm_only_note(spec: JobSpec, out: Path, config: dict[str, Any], dropped: list[str]) -> str:
    rank = max(int(r) for r in (config["r"], *(config.get("rank_pattern") or {}).values()))
    text = (
        "\n## LLM-only adapter\n\nOnly the language model's LoRA is here, for servers such as "
        "vLLM that apply LoRA to the language model only:\n\n"
        f"```bash\nvllm serve {base_reference(spec)} --enable-lora --lora-modules {spec.name}={out}"
        f"\n```\n\nIts LoRA rank is {rank}: vLLM needs `--max-lora-rank` at least that (its "
        "default is 16). Requests name the adapter as their model "
        f'(`"model": "{spec.name}"`).\n'
    )
    if dropped:
        text += (
            "\n**Dropped with --drop-non-llm** (the served model runs the base versions of "
            "these, so it differs from the trained one): "
            + ", ".join(f"`{d}`" for d in dropped[:20])
            + (" ..." if len(dropped) > 20 else "")
            + "\n"
        )
    return text
