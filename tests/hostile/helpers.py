"""What every hostile case asserts: the exit code, ONE clear message (text or a JSON object),
no traceback, and nothing written or deleted (the folder trees before and after)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Messages of Python's own failures: none may reach the user.
TRACEBACK_MARKERS = ("Traceback (most recent call last)", "RecursionError", "KeyError:")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.err + self.out


def cli(*argv: str) -> Result:
    """`vlaunch ARGV` in this process."""
    from launcher.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # only --help/--version exit by themselves
            code = int(e.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def assert_refused(result: Result, *needles: str, code: int = 2) -> None:
    """Exit `code`, one `error:` message containing every needle, no traceback."""
    assert result.code == code, result
    for marker in TRACEBACK_MARKERS:
        assert marker not in result.text, result.text[-3000:]
    assert result.err.count("error:") == 1, result.err[-3000:]
    for needle in needles:
        assert needle in result.err, (needle, result.err[-3000:])


def assert_json_error(result: Result, *needles: str) -> dict[str, Any]:
    """stdout is exactly one JSON object with an error; no traceback anywhere."""
    assert result.code != 0, result
    for marker in TRACEBACK_MARKERS:
        assert marker not in result.text, result.text[-3000:]
    data = json.loads(result.out)
    assert isinstance(data, dict) and data.get("error"), data
    text = json.dumps(data)
    for needle in needles:
        assert needle in text, (needle, text)
    return data


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder under `root` with its size and content hash (folders: -1)."""
    out: dict[str, tuple[int, str]] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = (-2, os.readlink(path))
        elif path.is_dir():
            out[rel] = (-1, "")
        else:
            out[rel] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def write_spec(path: Path, data: dict[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path
