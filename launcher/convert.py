"""Turn what users already have into a vlaunch job spec.

Two vocabularies are understood, often mixed in one file:
- Hugging Face `TrainingArguments`-style JSON (as in fms-hf-tuning's sample config:
  `model_name_or_path`, `per_device_train_batch_size`, `gradient_accumulation_steps`, ...);
- VILA's launch parameters (`GLOBAL_TRAIN_BATCH_SIZE`, `tune_vision_tower`, `lora_enable`,
  `lora_llm`, `lora_vt`, `model_max_length`, `image_aspect_ratio`, ...), as JSON/YAML, as
  `KEY=value` shell assignments, or as `--key value` arguments of `sft.sh`/`train.py`.

Every input key is either mapped, ignored with a stated reason, or reported as not mapped.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlaunch_core.errors import UserError

#: Keys that need no counterpart in vlaunch, with the reason shown to the user.
IGNORED: dict[str, str] = {
    "remove_unused_columns": "vlaunch keeps every column it needs",
    "dataset_kwargs": "vlaunch prepares multimodal samples itself",
    "torch_dtype": "weights load in the compute precision (train.precision)",
    "gradient_checkpointing_kwargs": "vlaunch always uses non-reentrant checkpointing",
    "accelerate_launch_args": "FSDP wraps the family's decoder layers automatically",
    "fsdp_transformer_layer_cls_to_wrap": "FSDP wraps the family's decoder layers automatically",
    "report_to": "set tracking.tensorboard / tracking.wandb / tracking.mlflow",
    "logging_steps": "mapped to train.log_every",
    "dataloader_num_workers": "mapped to data.num_workers",
    "do_train": "vlaunch always trains",
    "overwrite_output_dir": "a run name resumes; pick a new name for a new run",
    "lazy_preprocess": "vlaunch always streams and encodes lazily",
    "is_multimodal": "every vlaunch model is multimodal",
    "version": "chat templates come from the model's processor",
    "conv_mode": "chat templates come from the model's processor",
    "mm_use_im_start_end": "image tokens come from the model's processor",
    "mm_use_im_patch_token": "image tokens come from the model's processor",
    "mm_vision_select_layer": "part of the model's config",
    "mm_vision_select_feature": "part of the model's config",
    "mm_projector_type": "part of the model's config",
    "vision_tower": "part of the model's config",
    "tf32": "enabled automatically on GPUs that have it",
    "save_strategy": "checkpoints every train.checkpoint_every steps",
    "evaluation_strategy": "evaluation every train.eval_every steps",
    "eval_strategy": "evaluation every train.eval_every steps",
    "deepspeed": "set train.strategy (zero2, zero3, offload); the config is generated",
}


@dataclass
class Conversion:
    """The spec being built, and what became of every input key."""

    spec: dict[str, Any]
    inputs: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """normalised key -> (key as written, value)"""
    mapped: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    unmapped: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.inputs[key][1] if key in self.inputs else default

    def mark(self, key: str, target: str) -> None:
        """Record that input `key` (normalised) was mapped to spec key `target`."""
        if key in self.inputs:
            self.mapped[self.inputs[key][0]] = target


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def normalise_key(key: str) -> str:
    k = key.strip().lstrip("-").replace("-", "_")
    if k.startswith("DEFAULT_"):
        k = k[len("DEFAULT_") :]
    return k.lower()


def read_settings(path: str | Path) -> dict[str, Any]:
    """A flat key -> value dict from JSON, YAML, or shell text (`K=v` and `--k v`)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file", hint="pass a JSON, YAML or shell file")
    text = p.read_text(encoding="utf-8")
    data: Any = None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
    if isinstance(data, dict):
        return _flatten(data)
    return _parse_shell(text, p)


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "accelerate_launch_args" and isinstance(value, dict):
            out[key] = value
            out.update({k: v for k, v in value.items() if k.startswith("fsdp")})
        else:
            out[key] = value
    return out


def _parse_shell(text: str, path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        tokens = shlex.split(text.replace("\\\n", " "), comments=True)
    except ValueError as e:
        raise UserError(f"{path}: cannot parse as JSON, YAML or shell: {e}") from None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--"):
            name, eq, value = tok[2:].partition("=")
            if not eq:
                if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                    value = tokens[i + 1]
                    i += 1
                else:
                    value = "True"
            out[name] = value
        elif "=" in tok and tok.split("=", 1)[0].replace("_", "").isalnum():
            name, _, value = tok.partition("=")
            out[name.removeprefix("export ")] = value
        i += 1
    if not out:
        raise UserError(
            f"{path}: found no settings",
            hint="give a JSON/YAML mapping, KEY=value lines, or --key value arguments",
        )
    return out


Setter = Callable[[dict[str, Any], Any], None]


def _set(path: str, transform: Callable[[Any], Any] = _number) -> Setter:
    def setter(spec: dict[str, Any], value: Any) -> None:
        node = spec
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = transform(value)

    setter.__doc__ = path
    return setter


_SCHEDULERS = {
    "cosine": "cosine",
    "linear": "linear",
    "constant": "constant",
    "constant_with_warmup": "constant",
    "cosine_with_restarts": "cosine",
}

#: Input key (normalised) -> setter on the spec dict. Documented in docs/convert.md.
MAPPING: dict[str, Setter] = {
    "model_name_or_path": _set("model.name_or_path", str),
    "model_path": _set("model.name_or_path", str),
    "num_train_epochs": _set("train.epochs", float),
    "max_steps": _set("train.max_steps", int),
    "learning_rate": _set("train.lr", float),
    "weight_decay": _set("train.weight_decay", float),
    "warmup_ratio": _set("train.warmup_ratio", float),
    "warmup_steps": _set("train.warmup_steps", int),
    "lr_scheduler_type": _set("train.scheduler", lambda v: _SCHEDULERS.get(str(v), str(v))),
    "max_grad_norm": _set("train.max_grad_norm", float),
    "seed": _set("train.seed", int),
    "save_steps": _set("train.checkpoint_every", int),
    "save_total_limit": _set("train.keep_last", int),
    "eval_steps": _set("train.eval_every", int),
    "logging_steps": _set("train.log_every", int),
    "adam_beta1": lambda s, v: (
        s.setdefault("train", {}).setdefault("betas", [0.9, 0.999]).__setitem__(0, float(v))
    ),
    "adam_beta2": lambda s, v: (
        s.setdefault("train", {}).setdefault("betas", [0.9, 0.999]).__setitem__(1, float(v))
    ),
    "adam_epsilon": _set("train.eps", float),
    "gradient_checkpointing": _set("train.gradient_checkpointing", _truthy),
    "model_max_length": _set("data.max_length", int),
    "max_seq_length": _set("data.max_length", int),
    "dataloader_num_workers": _set("data.num_workers", int),
    "dataset_text_field": _set("data.datasets.train.text_field", str),
    "dataset_image_field": _set("data.datasets.train.image_field", str),
    "data_mixture": _set("data.mixture", str),
    "run_name": _set("name", str),
    "lora_r": _set("tuning.lora.r", int),
    "r": _set("tuning.lora.r", int),
    "lora_alpha": _set("tuning.lora.alpha", float),
    "lora_dropout": _set("tuning.lora.dropout", float),
    "use_dora": _set("tuning.lora.use_dora", _truthy),
    "target_modules": _set(
        "tuning.lora.target_modules", lambda v: v if isinstance(v, list) else str(v).split(",")
    ),
    "num_video_frames": _set("data.video.num_frames", int),
    "use_flash_attn": _set(
        "model.attn_implementation", lambda v: "flash_attention_2" if _truthy(v) else "sdpa"
    ),
    "trust_remote_code": _set("model.trust_remote_code", _truthy),
}

#: Keys consumed by the batch, precision, tuning and data rules below.
_SPECIAL = {
    "global_train_batch_size",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "bf16",
    "fp16",
    "tune_vision_tower",
    "tune_mm_projector",
    "tune_language_model",
    "lora_enable",
    "lora_llm",
    "lora_vt",
    "bits",
    "peft_method",
    "training_data_path",
    "fsdp",
    "mm_projector_lr",
    "vision_tower_lr",
    "gradient_accumulation",
    "output_dir",
    "image_aspect_ratio",
    "nproc_per_node",
    "nnodes",
}


def convert(
    settings: dict[str, Any],
    *,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    name: str | None = None,
) -> Conversion:
    """Map a flat settings dict onto a job-spec dict (not yet validated)."""
    norm: dict[str, tuple[str, Any]] = {normalise_key(k): (k, v) for k, v in settings.items()}
    spec: dict[str, Any] = {}
    conv = Conversion(spec=spec, inputs=norm)
    get, mark = conv.get, conv.mark
    if nodes is None:
        nodes = int(_number(norm.get("nnodes", ("", 1))[1]))
    if gpus_per_node is None:
        gpus_per_node = int(_number(norm.get("nproc_per_node", ("", 1))[1]))
    for key, target in (
        ("nnodes", "resources.nodes"),
        ("nproc_per_node", "resources.gpus_per_node"),
    ):
        if key in norm:
            conv.mapped[norm[key][0]] = target

    for key, (original, value) in norm.items():
        if key in IGNORED and key not in MAPPING:
            conv.ignored[original] = IGNORED[key]
        elif key in MAPPING:
            MAPPING[key](spec, value)
            conv.mapped[original] = MAPPING[key].__doc__ or "(spec)"
        elif key not in _SPECIAL:
            conv.unmapped[original] = value

    # Batch: the global batch is the product; micro and accumulation stay explicit.
    world = nodes * gpus_per_node
    train = spec.setdefault("train", {})
    resources = spec.setdefault("resources", {})
    resources.update({"nodes": nodes, "gpus_per_node": gpus_per_node})
    accum = get("gradient_accumulation_steps", get("gradient_accumulation"))
    per_device = get("per_device_train_batch_size")
    global_bs = get("global_train_batch_size")
    if global_bs is not None:
        train["global_batch_size"] = int(_number(global_bs))
        mark("global_train_batch_size", "train.global_batch_size")
        if accum is not None:
            train["grad_accum_steps"] = int(_number(accum))
            mark("gradient_accumulation_steps", "train.grad_accum_steps")
        if per_device is not None:
            conv.notes.append(
                "per_device_train_batch_size ignored: the planner derives it from the global "
                "batch (GLOBAL_TRAIN_BATCH_SIZE) exactly"
            )
            conv.ignored[norm["per_device_train_batch_size"][0]] = "derived by the planner"
    elif per_device is not None:
        micro = int(_number(per_device))
        steps = int(_number(accum)) if accum is not None else 1
        train.update(
            {
                "global_batch_size": micro * steps * world,
                "micro_batch_size": micro,
                "grad_accum_steps": steps,
            }
        )
        mark("per_device_train_batch_size", "train.micro_batch_size")
        mark("gradient_accumulation_steps", "train.grad_accum_steps")
        conv.notes.append(
            f"global batch {micro * steps * world} = per-device {micro} x accumulation {steps} "
            f"x {world} device(s) (pass --nodes/--gpus-per-node for another world size)"
        )

    # Precision.
    if _truthy(get("bf16", False)):
        train["precision"] = "bf16"
        mark("bf16", "train.precision")
    elif _truthy(get("fp16", False)):
        train["precision"] = "fp16"
        mark("fp16", "train.precision")
    for key in ("bf16", "fp16"):
        if key in norm and norm[key][0] not in conv.mapped:
            conv.ignored[norm[key][0]] = "false: precision left to train.precision=auto"

    fsdp = get("fsdp")
    if fsdp and "full_shard" in str(fsdp):
        train["strategy"] = "fsdp"
        mark("fsdp", "train.strategy")
    deepspeed = str(get("deepspeed") or "")
    for stage, strategy in (("zero3_offload", "offload"), ("zero3", "zero3"), ("zero2", "zero2")):
        if stage in deepspeed:
            train["strategy"] = strategy
            conv.ignored.pop(norm["deepspeed"][0], None)
            mark("deepspeed", "train.strategy")
            break

    _convert_tuning(conv)
    _convert_data(conv)

    aspect = get("image_aspect_ratio")
    if aspect is not None:
        spec.setdefault("data", {}).setdefault("image", {})["aspect_ratio"] = (
            "pad" if str(aspect) == "pad" else "resize"
        )
        mark("image_aspect_ratio", "data.image.aspect_ratio")
        if str(aspect) not in ("pad", "resize"):
            conv.notes.append(
                f"image_aspect_ratio={aspect} (VILA's tiling) has no vlaunch "
                "equivalent: images are resized by the model's processor"
            )

    run_name = name or spec.get("name")
    out_dir = get("output_dir")
    if out_dir is not None:
        out = Path(str(out_dir))
        run_name = run_name or out.name
        # <output.dir>/<name> is the run directory: keep the user's folder as it was.
        spec.setdefault("output", {})["dir"] = str(out.parent if out.name == run_name else out)
        mark("output_dir", "output.dir")
    spec["name"] = str(run_name or "converted")
    order = ["name", "model", "data", "tuning", "train", "resources", "output"]
    ordered = {k: spec[k] for k in order if spec.get(k)}
    ordered.update({k: v for k, v in spec.items() if k not in ordered and v})
    conv.spec = ordered
    return conv


def _convert_tuning(conv: Conversion) -> None:
    norm, spec, get, mark = conv.inputs, conv.spec, conv.get, conv.mark
    from vlaunch_core.models.presets import PRESETS

    tuning = spec.setdefault("tuning", {})
    lora = _truthy(get("lora_enable", False)) or str(get("peft_method", "")).lower() == "lora"
    qlora = str(get("bits", "16")) == "4"
    vt = "full" if _truthy(get("tune_vision_tower", False)) else "frozen"
    proj = "full" if _truthy(get("tune_mm_projector", True)) else "frozen"
    llm = "full" if _truthy(get("tune_language_model", not lora)) else "frozen"
    if lora:
        if _truthy(get("lora_llm", True)):
            llm = "qlora" if qlora else "lora"
        if _truthy(get("lora_vt", False)):
            vt = "lora"
    for key in (
        "lora_enable",
        "peft_method",
        "bits",
        "lora_llm",
        "lora_vt",
        "tune_vision_tower",
        "tune_mm_projector",
        "tune_language_model",
    ):
        mark(key, "tuning (module modes)")
    if any(
        k in norm
        for k in (
            "lora_enable",
            "peft_method",
            "tune_vision_tower",
            "tune_mm_projector",
            "tune_language_model",
            "lora_llm",
        )
    ):
        modes = {"vision_tower": vt, "projector": proj, "language_model": llm}
        preset = next(
            (
                p.name
                for p in PRESETS.values()
                if (p.vision_tower, p.projector, p.language_model) == (vt, proj, llm)
            ),
            None,
        )
        if preset is not None:
            tuning["preset"] = preset
        else:
            tuning["preset"] = None
            tuning.update(modes)
    if not lora and tuning.pop("lora", None) is not None:
        for original, target in list(conv.mapped.items()):
            if target.startswith("tuning.lora."):
                del conv.mapped[original]
                conv.ignored[original] = "LoRA is not enabled (lora_enable is false)"
    lr = get("learning_rate")
    for key, module in (("vision_tower_lr", "vision_tower"), ("mm_projector_lr", "projector")):
        value = get(key)
        if value is not None and lr:
            tuning.setdefault("lr_multipliers", {})[module] = float(value) / float(lr)
            mark(key, f"tuning.lr_multipliers.{module}")


def _is_hub_id(path: str) -> bool:
    """`ORG/NAME` (or `NAME`) that is not a local path or a data file."""
    local = path.startswith(("/", "./", "../", "~")) or Path(path).exists()
    suffixes = (".json", ".jsonl", ".parquet", ".arrow", ".tar", ".csv")
    return not local and path.count("/") <= 1 and not path.lower().endswith(suffixes)


def _convert_data(conv: Conversion) -> None:
    spec, get, mark = conv.spec, conv.get, conv.mark
    data = spec.setdefault("data", {})
    path = get("training_data_path")
    if path is not None:
        path = str(path)
        entry = data.setdefault("datasets", {}).setdefault("train", {})
        entry["data_path"] = path
        if _is_hub_id(path):
            # a Hugging Face dataset id: read from the local HF cache (downloaded when online)
            entry["source"] = "hf"
            entry["split"] = "train"
            conv.notes.append(
                f"training_data_path '{path}' is a Hugging Face dataset: read from the local "
                "HF cache (HF_HOME; `hf download --repo-type dataset` it where there is no "
                "network)"
            )
        if "text_field" in entry or "image_field" in entry:
            entry["format"] = "messages"
        data["mixture"] = "train"
        mark("training_data_path", "data.datasets.train.data_path")
    datasets = data.get("datasets", {})
    if "train" in datasets and "data_path" not in datasets["train"]:
        conv.notes.append(
            "dataset fields given without training_data_path: set data.datasets.train.data_path"
        )
    data.setdefault("mixture", "REPLACE_ME")
    if data["mixture"] == "REPLACE_ME":
        conv.notes.append("no dataset given: set data.mixture (and data.registry) before running")
    spec.setdefault("model", {}).setdefault("name_or_path", "REPLACE_ME")
    if spec["model"]["name_or_path"] == "REPLACE_ME":
        conv.notes.append("no model given: set model.name_or_path")
