"""Model configs as plain dicts, without torch and without the network.

`model_config_dict(name_or_path)` answers for every way a job spec names a model:
a local folder (its `config.json`), `tiny:<type>`, `random:<name>`, a hub id that is in the
local Hugging Face cache, or a well-known hub id whose `config.json` ships with vlaunch
(`known/`, so a model can be planned before it is downloaded). Nothing here downloads.
`random:` takes a known hub id or its short alias (`known/index.json`).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from vlaunch_core.errors import UserError, did_you_mean

KNOWN_DIR = Path(__file__).parent / "known"

logger = logging.getLogger(__name__)


class ModelNotLocal(UserError):
    """A hub id that is neither cached nor known: resolvable only over the network."""


TINY_PREFIX = "tiny:"
RANDOM_PREFIX = "random:"


def model_config_dict(name_or_path: str, revision: str | None = None) -> dict[str, Any]:
    """The config dict of a model (a deep copy: callers may change it)."""
    if name_or_path.startswith(TINY_PREFIX):
        # Tiny configs are derived by the training side (trainer/models/tiny); here only
        # the architecture is known, and the fingerprint stands for the rest.
        return {
            "model_type": name_or_path.removeprefix(TINY_PREFIX),
            "_tiny": tiny_fingerprint(),
        }
    if name_or_path.startswith(RANDOM_PREFIX):
        return arch_config(name_or_path.removeprefix(RANDOM_PREFIX))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _read_config(path / "config.json")
    if _looks_like_path(name_or_path):
        raise UserError(
            f"model folder '{name_or_path}' does not exist",
            hint="model.name_or_path must be an existing folder, a hub id (org/name), "
            "tiny:<type> or random:<name>",
        )
    cached = _hf_cached_config(name_or_path, revision)
    if cached is not None:
        return _read_config(cached)
    known = known_hub_ids()
    if name_or_path in known:
        return _read_config(KNOWN_DIR / known[name_or_path])
    raise ModelNotLocal(
        f"no config for model '{name_or_path}': it is not a local folder, not in the Hugging "
        f"Face cache, and not a known hub id.{did_you_mean(name_or_path, known)}",
        hint="download it first (`huggingface-cli download "
        f"{name_or_path}`), point model.name_or_path at a local copy, or use random:<name> "
        f"({', '.join(known_aliases())})",
    )


@functools.cache
def tiny_fingerprint() -> str:
    """What a `tiny:<type>` model depends on: the transformers version and the source of
    the tiny-model builder (read as text, next to this package; not imported)."""
    import hashlib
    from importlib import metadata

    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        version = "none"
    digest = hashlib.sha256()
    folder = Path(__file__).resolve().parents[2] / "trainer" / "models" / "tiny"
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"tf{version}-{digest.hexdigest()[:10]}"


def arch_config(name: str) -> dict[str, Any]:
    """The config of a real-size architecture (`random:<hub id or alias>`)."""
    hub = known_aliases().get(name, name)
    known = known_hub_ids()
    if hub not in known:
        names = [*known_aliases(), *known]
        raise UserError(
            f"unknown architecture '{name}'.{did_you_mean(name, names)}",
            hint=f"use random:<name> with one of: {', '.join(known_aliases())} (or a hub id "
            "of vlaunch_core/models/known/)",
        )
    return _read_config(KNOWN_DIR / known[hub])


@functools.cache
def _index() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((KNOWN_DIR / "index.json").read_text())
    return data


def known_aliases() -> dict[str, str]:
    """Short names of known hub ids (`random:qwen2-vl-2b`)."""
    return dict(_index()["aliases"])


def known_hub_ids() -> dict[str, str]:
    """Hub id -> its config file under `known/` (ids sharing a config included)."""
    out = {
        f"{org.name}/{f.stem}": f"{org.name}/{f.name}"
        for org in KNOWN_DIR.iterdir()
        if org.is_dir()
        for f in org.glob("*.json")
    }
    for hub, same in _index()["same_config"].items():
        out[hub] = out[same]
    return out


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(
            f"{path} does not exist",
            hint="a model folder needs the config.json that save_pretrained writes",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            f"{path}: cannot read the model config: {e}",
            hint="the file must be the JSON written by save_pretrained",
        ) from e
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: the model config is not a JSON object",
            hint="the file must be the JSON written by save_pretrained",
        )
    return data


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") != 1


def hf_cached_file(repo_id: str, model_spec: Any) -> Path | None:
    """`config.json` of a hub id in the local Hugging Face cache, or None."""
    return _hf_cached_config(repo_id, getattr(model_spec, "revision", None))


def _hf_cached_config(repo_id: str, revision: str | None) -> Path | None:
    """`config.json` of `repo_id` from the local Hugging Face cache, or None (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception as e:  # an invalid repo id is a miss, not a crash
        logger.debug("HF cache lookup for %s failed: %s", repo_id, e)
        return None
    return Path(found) if isinstance(found, str) else None
