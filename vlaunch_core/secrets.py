"""Secrets recognised by their value, wherever they sit in a job spec.

A key named `HF_TOKEN` is caught by its name (`spec_errors.looks_secret`); a token pasted
under an innocent key (`env.NOTE: hf_...`, a tracking URI with `user:password@`) only by its
value. Validation refuses both, naming the key and never the value; everything that writes
or logs a spec (the run's `spec.yaml`, checkpoints, exports, the Kubernetes ConfigMap, the
Slurm job file, trackers' run config) goes through `redact`, and every user-facing error
through `redact_text`, so a value that got past validation is still not copied around.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

#: (what it is, pattern) of credentials with a recognisable shape. Anchored on word
#: boundaries and minimum lengths so that names such as `hf_data` or `sk-learn` pass.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})")),
    ("Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("API key (sk-...)", re.compile(r"\bsk-(?:[A-Za-z0-9_-]*-)?[A-Za-z0-9_-]{20,}")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("Weights & Biases key", re.compile(r"\bwandb_v1_\w{20,}")),
    ("private key", re.compile(r"-----BEGIN (?:[A-Z ]+ )?PRIVATE KEY-----")),
    (
        "JSON web token",
        re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    ),
)

#: `scheme://user:password@host`: credentials inside a URL.
_URL_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^/\s:@]+):([^/\s@]+)@")


def secret_kind(text: str) -> str | None:
    """What kind of secret `text` holds (None: nothing that looks like one)."""
    if _URL_CREDENTIALS.search(text):
        return "URL with a password (user:password@)"
    for kind, pattern in _PATTERNS:
        if pattern.search(text):
            return kind
    return None


def redact_text(text: str) -> str:
    """`text` with every secret-looking part replaced (a URL keeps its user name)."""
    if not text:
        return text
    out = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}:{REDACTED}@", text)
    for _, pattern in _PATTERNS:
        out = pattern.sub(REDACTED, out)
    return out


def redact(data: Any) -> Any:
    """A copy of a JSON-like value with every secret-looking string (or part) redacted;
    keys too, since `env` keys are user text."""
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, dict):
        return {redact(k) if isinstance(k, str) else k: redact(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact(v) for v in data]
    return data


def find_secrets(data: Any, where: str = "") -> list[tuple[str, str]]:
    """(dotted key, kind) of every string in a JSON-like value that looks like a secret."""
    found: list[tuple[str, str]] = []
    if isinstance(data, str):
        kind = secret_kind(data)
        if kind is not None:
            found.append((where, kind))
    elif isinstance(data, dict):
        for key, value in data.items():
            sub = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and (kind := secret_kind(key)) is not None:
                found.append((where or "(top level)", f"{kind} as a key"))
            found += find_secrets(value, sub)
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            found += find_secrets(value, f"{where}[{i}]")
    return found
