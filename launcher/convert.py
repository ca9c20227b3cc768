"""Turn what users already have into a vlaunch job spec.

Two vocabularies are understood, often mixed in one file:
- Hugging Face `TrainingArguments`-style JSON (as in fms-hf-tuning's sample config:
  `model_name_or_path`, `per_device_train_batch_size`, `gradient_accumulation_steps`, ...);
- VILA's launch parameters (`GLOBAL_TRAIN_BATCH_SIZE`, `tune_vision_tower`, `lora_enable`,
  `lora_llm`, `lora_vt`, `model_max_length`, `image_aspect_ratio`, ...), as JSON/YAML, as
  `KEY=value` shell assignments, or as `--key value` arguments of `sft.sh`/`train.py`.

Every input key is either mapped, ignored with a stated reason, or reported as not mapped;
where the spec does something other than the input would have done in its own tool, it says
so (`Conversion.changed`). Shell variables are expanded from the file and `--set NAME=value`
(`launcher/convert_shell.py`); a value that still names one is never copied into the spec:
the conversion is refused, naming each variable. Values of the wrong type are reported all at
once, never as a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launcher.convert_shell import ShellSettings, Unresolved, expand, parse_shell
from vlaunch_core.errors import Problem, ProblemReport, UserError

#: Larger than any settings file: refuse instead of reading a data file or an archive.
MAX_BYTES = 2 * 1024 * 1024

#: Keys that need no counterpart in vlaunch, with the reason shown to the user.
IGNORED: dict[str, str] = {
    "remove_unused_columns": "vlaunch keeps every column it needs",
    "dataset_kwargs": "vlaunch prepares multimodal samples itself",
    "torch_dtype": "weights load in the compute precision (train.precision)",
    "gradient_checkpointing_kwargs": "vlaunch always uses non-reentrant checkpointing",
    "accelerate_launch_args": "its FSDP settings are read (train.strategy); the rest is "
    "accelerate's launcher",
    "master_addr": "Ray finds the head node (Slurm, Kubernetes or this machine)",
    "master_port": "Ray finds the head node (Slurm, Kubernetes or this machine)",
    "node_rank": "Ray places the workers",
    "rdzv_backend": "Ray places the workers",
    "rdzv_endpoint": "Ray places the workers",
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
    changed: list[str] = field(default_factory=list)
    """Where the spec does something other than the input would have done in its own tool."""
    variables: dict[str, str] = field(default_factory=dict)
    """Shell variables used, with the value each got."""
    problems: list[Problem] = field(default_factory=list)

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
    k = key.strip().lstrip("-").replace("-", "_").removeprefix("accelerate_launch_args.")
    if k.startswith("DEFAULT_"):
        k = k[len("DEFAULT_") :]
    return k.lower()


def read_settings(path: str | Path, given: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A flat key -> value dict from JSON, YAML, or shell text (`K=v` and `--k v`)."""
    return read_source(path, given or {}).settings


def read_source(path: str | Path, given: Mapping[str, str]) -> ShellSettings:
    """The settings of a file, with `given` (`--set NAME=value`): for shell text the values
    of its variables, for a JSON/YAML mapping settings that replace the file's."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file", hint="pass a JSON, YAML or shell file")
    data = p.read_bytes()
    binary = b"\x00" in data[:65536]
    if binary or len(data) > MAX_BYTES:
        raise UserError(
            f"{p}: not a settings file ({'binary' if binary else 'larger than 2 MiB'})",
            hint="give the JSON/YAML settings or the sft.sh-style script itself",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{p}: not UTF-8 text (byte {e.start})",
            hint="give the JSON/YAML settings or the sft.sh-style script itself",
        ) from None
    parsed: Any = None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = None
    else:
        if not isinstance(parsed, dict):
            raise UserError(
                f"{p}: the JSON is a {type(parsed).__name__}, not a mapping of settings",
                hint='give {"learning_rate": 1e-4, ...}',
            )
    if isinstance(parsed, dict):
        settings = _flatten(parsed)
        for key, value in settings.items():
            if isinstance(value, str) and "$" in value:
                settings[key] = expand(value, given)
        settings.update(given)
        return ShellSettings(settings)
    return parse_shell(text, p, given)


def _flatten(data: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        if key == "accelerate_launch_args" and isinstance(value, dict):
            out[key] = value
            for sub, inner in value.items():
                if str(sub).startswith("fsdp"):
                    out[f"{key}.{sub}"] = inner
        else:
            out[key] = value
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
    _refuse_unresolved(norm, nodes=nodes, gpus_per_node=gpus_per_node)
    if nodes is None:
        nodes = _integer(conv, "nnodes", 1, minimum=1) or 1
    if gpus_per_node is None:
        gpus_per_node = _integer(conv, "nproc_per_node", 1, minimum=1) or 1
    for key, target in (
        ("nnodes", "resources.nodes"),
        ("nproc_per_node", "resources.gpus_per_node"),
    ):
        if key in norm:
            conv.mapped[norm[key][0]] = target

    for key, (original, value) in norm.items():
        if isinstance(value, Unresolved) and (key in MAPPING or key in _SPECIAL):
            continue  # not needed here (`_refuse_unresolved` stopped those that are)
        if isinstance(value, Unresolved) and key not in IGNORED:
            conv.unmapped[original] = value.text  # not a key vlaunch maps: shown, never used
        elif key in IGNORED and key not in MAPPING:
            conv.ignored[original] = IGNORED[key]
        elif key in MAPPING:
            try:
                MAPPING[key](spec, value)
            except (TypeError, ValueError, IndexError):
                conv.problems.append(_type_problem(original, value, MAPPING[key].__doc__))
                continue
            conv.mapped[original] = MAPPING[key].__doc__ or "(spec)"
        elif key not in _SPECIAL and not key.startswith("fsdp"):
            conv.unmapped[original] = value

    scheduler = get("lr_scheduler_type")
    if isinstance(scheduler, str) and _SCHEDULERS.get(scheduler, scheduler) != scheduler:
        conv.changed.append(
            f"lr_scheduler_type={scheduler} becomes train.scheduler="
            f"{_SCHEDULERS[scheduler]} (vlaunch has no {scheduler})"
        )

    # Batch: the global batch is the product; micro and accumulation stay explicit.
    world = nodes * gpus_per_node
    train = spec.setdefault("train", {})
    resources = spec.setdefault("resources", {})
    resources.update({"nodes": nodes, "gpus_per_node": gpus_per_node})
    accum_key = (
        "gradient_accumulation_steps"
        if "gradient_accumulation_steps" in norm
        else ("gradient_accumulation")
    )
    accum = _integer(conv, accum_key, None, minimum=1)
    per_device = _integer(conv, "per_device_train_batch_size", None, minimum=1)
    global_bs = _integer(conv, "global_train_batch_size", None, minimum=1)
    if global_bs is not None:
        train["global_batch_size"] = global_bs
        mark("global_train_batch_size", "train.global_batch_size")
        if accum is not None:
            train["grad_accum_steps"] = accum
            mark(accum_key, "train.grad_accum_steps")
        if "per_device_train_batch_size" in norm:
            conv.changed.append(
                "per_device_train_batch_size is not used: the planner derives the micro batch "
                "from the global batch (GLOBAL_TRAIN_BATCH_SIZE) exactly"
            )
            conv.ignored[norm["per_device_train_batch_size"][0]] = "derived by the planner"
    elif per_device is not None:
        micro = per_device
        steps = accum if accum is not None else 1
        train.update(
            {
                "global_batch_size": micro * steps * world,
                "micro_batch_size": micro,
                "grad_accum_steps": steps,
            }
        )
        mark("per_device_train_batch_size", "train.micro_batch_size")
        mark(accum_key, "train.grad_accum_steps")
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
    _convert_accelerate_fsdp(conv)
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
            conv.changed.append(
                f"image_aspect_ratio={aspect} (VILA's tiling) has no vlaunch "
                "equivalent: images are resized by the model's processor"
            )

    run_name = name or spec.get("name")
    out_dir = get("output_dir")
    if out_dir is not None:
        out = Path(str(out_dir))
        if out.name == "model" and str(out.parent) not in ("", "."):
            out = out.parent  # VILA's `--output_dir $OUTPUT_DIR/model`: the run is OUTPUT_DIR
        run_name = run_name or out.name
        # <output.dir>/<name> is the run directory: keep the user's folder as it was.
        root = out.parent if out.name == run_name else out
        spec.setdefault("output", {})["dir"] = str(root)
        mark("output_dir", "output.dir")
        run_dir = root / str(run_name or "converted")
        if run_dir != Path(str(out_dir)):
            conv.changed.append(
                f"output_dir={out_dir}: the run directory is <output.dir>/<name> = {run_dir} "
                "(checkpoints, adapter and logs in it)"
            )
    spec["name"] = str(run_name or "converted")
    if conv.problems:
        raise ProblemReport(
            title="cannot convert these settings", problems=conv.problems, source=None
        )
    order = ["name", "model", "data", "tuning", "train", "resources", "output"]
    ordered = {k: spec[k] for k in order if spec.get(k)}
    ordered.update({k: v for k, v in spec.items() if k not in ordered and v})
    conv.spec = ordered
    return conv


#: Where each key that needs a value goes, for the "no value" error.
_TARGETS = {
    "nnodes": "resources.nodes",
    "nproc_per_node": "resources.gpus_per_node",
    "global_train_batch_size": "train.global_batch_size",
    "per_device_train_batch_size": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.grad_accum_steps",
    "gradient_accumulation": "train.grad_accum_steps",
    "output_dir": "output.dir",
    "training_data_path": "data.datasets.train.data_path",
}


def _refuse_unresolved(
    norm: dict[str, tuple[str, Any]], *, nodes: int | None, gpus_per_node: int | None
) -> None:
    """One error naming every shell variable a mapped setting needs and nothing set."""
    needed = set(MAPPING) | _SPECIAL
    skip = set()
    if nodes is not None:
        skip.add("nnodes")
    if gpus_per_node is not None:
        skip.add("nproc_per_node")
    global_bs = norm.get("global_train_batch_size", ("", None))[1]
    if global_bs is not None and not isinstance(global_bs, Unresolved):
        skip.add("per_device_train_batch_size")  # derived by the planner anyway
    rows: dict[str, list[str]] = {}
    for key, (original, value) in norm.items():
        if not isinstance(value, Unresolved) or key not in needed or key in skip:
            continue
        setter = MAPPING.get(key)
        target = _TARGETS.get(key) or (setter.__doc__ if setter else None) or "the spec"
        for variable in value.variables:
            rows.setdefault(variable, []).append(f"{original} ({target})")
    if not rows:
        return
    width = max(len(v) for v in rows) + 3
    lines = [
        f"  {('$' + v if v.isidentifier() or v.isdigit() else v):<{width}} {', '.join(keys)}"
        for v, keys in rows.items()
    ]
    names = [v for v in rows if v.isidentifier() or v.isdigit()]
    example = " ".join(f"--set {v}=..." for v in names[:4]) or "--set NAME=value"
    torchrun = {"nnodes", "nproc_per_node"} & {
        k for k, (_, v) in norm.items() if isinstance(v, Unresolved)
    }
    raise UserError(
        f"{len(rows)} shell value(s) the settings need are not set in this file, and vlaunch "
        "never copies `$...` into a spec:\n" + "\n".join(lines),
        hint=f"give each a value: vlaunch convert FILE {example}"
        + (" (or --nodes / --gpus-per-node for torchrun's sizes)" if torchrun else "")
        + ("; replace a command substitution by its value" if len(names) < len(rows) else ""),
    )


def _integer(conv: Conversion, key: str, default: int | None, *, minimum: int) -> int | None:
    """The setting `key` as an integer >= minimum (a problem is recorded otherwise)."""
    if key not in conv.inputs:
        return default
    original, value = conv.inputs[key]
    if isinstance(value, Unresolved):
        return default  # not needed (`_refuse_unresolved` stopped those that are)
    number = _number(value) if isinstance(value, str | int | float) else value
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < minimum:
        conv.problems.append(
            Problem(original, f"{value!r} is not a whole number >= {minimum}", "fix the value")
        )
        return default
    return number


def _type_problem(original: str, value: Any, target: str | None) -> Problem:
    return Problem(
        original,
        f"{value!r} cannot become {target or 'a spec value'}",
        "fix the value (a number, true/false or text, as the key expects)",
    )


def _convert_accelerate_fsdp(conv: Conversion) -> None:
    """fms-hf-tuning style: FSDP settings of `accelerate launch` (`accelerate_launch_args`,
    with `fsdp_transformer_layer_cls_to_wrap`, `fsdp_sharding_strategy`, ...) mean FSDP."""
    keys = [k for k in conv.inputs if k.startswith("fsdp_")]
    if not keys:
        return
    train = conv.spec.setdefault("train", {})
    strategy = train.get("strategy")
    wrap_key = "fsdp_transformer_layer_cls_to_wrap"
    if strategy not in (None, "fsdp"):
        conv.changed.append(
            f"the FSDP settings ({', '.join(conv.inputs[k][0] for k in keys)}) are not used: "
            f"train.strategy is {strategy} (from the deepspeed setting)"
        )
        return
    train["strategy"] = "fsdp"
    for key in keys:
        conv.mapped[conv.inputs[key][0]] = "train.strategy=fsdp"
    if wrap_key in conv.inputs:
        wanted = str(conv.inputs[wrap_key][1])
        known = _layer_classes(conv.spec.get("model", {}).get("name_or_path"))
        listed = [c.strip() for c in wanted.split(",") if c.strip()]
        if known is None:
            detail = (
                "vlaunch wraps the model's own decoder and encoder layers (`vlaunch models NAME`)"
            )
        elif all(c in known for c in listed):
            detail = f"vlaunch wraps the model's layer classes, {', '.join(known)}"
        else:
            detail = (
                f"vlaunch wraps the model's own layer classes ({', '.join(known)}), not "
                f"{', '.join(c for c in listed if c not in known)}"
            )
        conv.changed.append(f"{conv.inputs[wrap_key][0]}={wanted}: FSDP ({detail})")


def _layer_classes(model: str | None) -> tuple[str, ...] | None:
    """The model's layer classes from vlaunch's catalog, when known here (never the network)."""
    if not model:
        return None
    try:
        from vlaunch_core.models.catalog import describe
        from vlaunch_core.spec import ModelSpec

        found = describe(ModelSpec(name_or_path=model))
    except Exception:  # an unknown or unreadable model: say nothing about its classes
        return None
    return tuple(found.layer_classes) if found is not None else None


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
    else:
        for key, part, mode in (
            ("lora_llm", "language model", llm),
            ("lora_vt", "vision tower", vt),
        ):
            if key in norm and _truthy(get(key)):
                how = {"full": "trained fully", "frozen": "frozen"}[mode]
                conv.changed.append(
                    f"{norm[key][0]}={norm[key][1]} without lora_enable=True: VILA applies "
                    f"LoRA only with lora_enable, so the {part} is {how} here, not LoRA "
                    "(--set lora_enable=True for LoRA)"
                )
    tuned = bool(norm.keys() & {"lora_enable", "peft_method", "tune_vision_tower", "lora_llm"})
    if tuned and "tune_language_model" not in norm and not lora:
        conv.changed.append(
            "tune_language_model is not given: the language model is trained fully here "
            "(VILA's own default is False, frozen: --set tune_language_model=False)"
        )
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
