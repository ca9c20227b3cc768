"""The description of a job's model, for the torch-free side (planner, validation, CLI).

`describe(model_spec)` answers from a cache (`$VLAUNCH_CACHE/descriptions/`, keyed by the
model's config, its remote code and the transformers version) or asks the training stack in
a subprocess (`python -m trainer.models.describe`, which builds the model on the meta device):
a second or so once, instantly afterwards, and the launcher never imports torch. Where the
training stack is not installed (a login node with only the launcher), the answer is
`None`: the plan then says "memory unknown", never "fits".

Trade-off: shapes could be read torch-free from a local checkpoint's safetensors headers,
but their tensor names differ from the model's parameters wherever transformers converts
checkpoint keys on load, and a config-only model (not downloaded yet, `tiny:`, `random:`)
has no headers at all; the meta-device model is what the trainer actually builds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from importlib import metadata, util
from pathlib import Path
from typing import TYPE_CHECKING

from vlaunch_core.errors import UserError
from vlaunch_core.models.configs import (
    RANDOM_PREFIX,
    TINY_PREFIX,
    ModelNotLocal,
    hf_cached_file,
    model_config_dict,
)
from vlaunch_core.models.description import ModelDescription
from vlaunch_core.models.quirks import quirks_for

if TYPE_CHECKING:
    from vlaunch_core.spec import ModelSpec

logger = logging.getLogger(__name__)

CACHE_ENV = "VLAUNCH_CACHE"
DESCRIBE_TIMEOUT_S = 600
_VERSION = "1"  # bump when trainer.models.describe changes what it writes


def cache_root() -> Path:
    """Root of vlaunch's caches: `$VLAUNCH_CACHE` or `~/.cache/vlaunch`."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "vlaunch"


def check_supported(model_spec: ModelSpec) -> str:
    """The model's `model_type`, after the refusals that need no training stack (a model
    layout transformers cannot load, such as VILA's original `llava_llama`). Raises a user
    error for an unreadable reference; `ModelNotLocal` for a hub id only on the network."""
    config = model_config_dict(model_spec.name_or_path, model_spec.revision)
    model_type = str(config.get("model_type") or "")
    quirks = quirks_for(model_type)
    if quirks.refuse is not None:
        raise UserError(f"{model_spec.name_or_path} is {quirks.refuse}", hint=quirks.refuse_hint)
    if not model_type:
        raise UserError(
            f"{model_spec.name_or_path}: its config.json has no model_type",
            hint="use the config.json written by transformers' save_pretrained",
        )
    return model_type


def describe(model_spec: ModelSpec) -> ModelDescription | None:
    """The description of the spec's model, or None when it cannot be known here (the
    training stack is not installed, or the model is a hub id that is not downloaded)."""
    try:
        check_supported(model_spec)
    except ModelNotLocal:
        return None
    key = _key(model_spec)
    path = cache_root() / "descriptions" / f"{key}.json" if key else None
    if path is not None and path.is_file():
        try:
            return ModelDescription.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            logger.debug("ignoring a damaged description cache entry %s", path)
    if util.find_spec("torch") is None or util.find_spec("transformers") is None:
        logger.info("the training stack is not installed here: model shapes unknown")
        return None
    description = _ask_training_stack(model_spec)
    if path is not None:
        _write_atomic(path, json.dumps(description.to_json()))
    return description


def _ask_training_stack(model_spec: ModelSpec) -> ModelDescription:
    argv = [sys.executable, "-m", "trainer.models.describe", model_spec.name_or_path]
    if model_spec.revision:
        argv += ["--revision", model_spec.revision]
    if model_spec.trust_remote_code:
        argv.append("--trust-remote-code")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="vlaunch-describe-") as tmp:
        out = Path(tmp) / "description.json"
        try:
            proc = subprocess.run(
                [*argv, "--out", str(out)],
                capture_output=True,
                text=True,
                timeout=DESCRIBE_TIMEOUT_S,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise UserError(
                f"describing model '{model_spec.name_or_path}' took over {DESCRIBE_TIMEOUT_S} s",
                hint="check the model reference; set train.micro_batch_size to plan without it",
            ) from None
        try:
            data = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            tail = (proc.stderr or proc.stdout).strip()[-1500:]
            raise RuntimeError(f"describing {model_spec.name_or_path} failed:\n{tail}") from None
    if "error" in data:
        raise UserError(str(data["error"]), hint=data.get("fix"))
    return ModelDescription.from_json(data)


def _key(model_spec: ModelSpec) -> str | None:
    """What the description depends on, hashed; None when it cannot be pinned down."""
    name = model_spec.name_or_path
    parts = [_VERSION, _version("transformers"), _version("vlaunch"), name]
    try:
        parts.append(json.dumps(model_config_dict(name, model_spec.revision), sort_keys=True))
    except UserError:
        return None
    folder = Path(name).expanduser()
    if not name.startswith((TINY_PREFIX, RANDOM_PREFIX)) and not folder.is_dir():
        cached = hf_cached_file(name, model_spec)
        folder = cached.parent if cached is not None else folder
    if model_spec.trust_remote_code and folder.is_dir():  # its own code shapes it too
        for py in sorted(folder.glob("*.py")):
            parts.append(py.read_text(encoding="utf-8", errors="replace"))
    parts.append(str(model_spec.trust_remote_code))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
