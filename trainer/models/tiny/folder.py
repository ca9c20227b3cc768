"""The folder of a `tiny:<type>` model: built once into vlaunch's cache, then loaded like a
downloaded checkpoint."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "VLAUNCH_CACHE"


#: What a transformers model type looks like (`llava`, `qwen2_5_vl`, `gemma3n`).
_PLAIN_NAME = re.compile(r"[a-z0-9_]+")


def cache_dir() -> Path:
    """Root of vlaunch's caches: `$VLAUNCH_CACHE` or `~/.cache/vlaunch`."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "vlaunch"


def tiny_model_path(model_type: str, root: Path | None = None) -> Path:
    """The folder of `tiny:<type>`, built on first use.

    Ranks started together all ask for it at once: one builds it (under a file lock next to
    the folder) while the others wait, then find it complete. The build goes to a temporary
    folder renamed into place, so a process killed mid-build never leaves a folder that
    looks complete; a folder without `config.json` (such debris) is replaced.
    """
    from filelock import FileLock

    family = model_type
    target = (root or cache_dir() / "tiny") / _tiny_version() / family
    # A built folder answers without importing transformers (seconds of a launch): only a
    # plain type name can name one, so no path outside the cache is looked at.
    if _PLAIN_NAME.fullmatch(family) and (target / "config.json").is_file():
        return target

    from trainer.models.tiny import build_tiny, check_model_type

    check_model_type(model_type)  # unknown type -> user error before touching the disk
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{family}.lock"):
        if (target / "config.json").is_file():
            return target  # another process built it while this one waited
        tmp = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=target.parent))
        try:
            build_tiny(family, tmp)
            if target.exists():  # debris: move it aside atomically, then put ours in place
                stale = Path(tempfile.mkdtemp(prefix=f".{family}-stale-", dir=target.parent))
                target.rename(stale / family)
                shutil.rmtree(stale, ignore_errors=True)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tiny_version() -> str:
    """Tiny folders are keyed by the transformers version and the tiny builder's source."""
    from vlaunch_core.models.configs import tiny_fingerprint

    return tiny_fingerprint()
