"""Settings from shell text (VILA's `sft.sh`, `KEY=value` lines, `torchrun ... --key value`),
with the script's own variables expanded as the shell would.

Assignments are read in order (`X=1`, `export X=1`, `X=${X:-$DEFAULT_X}`, `X=${1:-"a b"}`)
and `$X`, `${X}`, `${X:-default}`, `${X-default}` expand from them; `--set X=value` gives a
variable a value from outside (it wins over the script's). VILA's scripts leave some values
to `scripts/setups/train.sh` (`RUN_NAME=${RUN_NAME:-$DEFAULT_RUN_NAME}`): a variable that is
never assigned but has a `DEFAULT_` twin takes the twin's value, as that script does, and
says so. Whatever still cannot be known here (a variable nobody set, `$(command)`,
backquotes, `$((arithmetic))`) stays `Unresolved`: the converter never copies `$...` into a
spec.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlaunch_core.errors import UserError

#: `--set` names: shell variables and positional parameters (`1`: the script's first argument).
VARIABLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)$")
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_EXPANSION = re.compile(
    r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*|[0-9]+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*|[0-9])"
)
_COMMAND = re.compile(r"\$\(\(.*?\)\)|\$\(.*?\)|`[^`]*`|\$\{[^}]*\}", re.S)


@dataclass(frozen=True)
class Unresolved:
    """A value that names what the shell would fill in and this file does not say."""

    text: str
    variables: tuple[str, ...]

    def __str__(self) -> str:
        return self.text


@dataclass
class ShellSettings:
    """Settings read from shell text, and how its variables were filled in."""

    settings: dict[str, Any]
    variables: dict[str, str] = field(default_factory=dict)
    """Every variable used, with the value it got."""
    notes: list[str] = field(default_factory=list)


def parse_set(items: list[str]) -> dict[str, str]:
    """`--set NAME=value` arguments as a mapping; a bad one is a user error."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not VARIABLE.match(name):
            raise UserError(
                f"--set {item!r}: write --set NAME=value",
                hint="NAME is a shell variable of the script (e.g. --set NNODES=2) or a "
                "setting (e.g. --set lora_enable=True)",
            )
        out[name] = value
    return out


def expand(text: str, env: Mapping[str, str]) -> str | Unresolved:
    """`text` with `$X`, `${X}`, `${X:-default}` filled in from `env`; Unresolved when a
    variable is not in `env` (and has no default) or the text runs a command."""
    missing: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        op, default = match.group("op"), match.group("default")
        value = env.get(name)
        if (op == ":-" and not value) or (op == "-" and value is None):
            inner = expand(_unquote(default or ""), env)
            if isinstance(inner, Unresolved):
                missing.extend(inner.variables)
                return match.group(0)
            return inner
        if value is None:
            missing.append(name)
            return match.group(0)
        return value

    out = _EXPANSION.sub(fill, text)
    if missing:
        return Unresolved(text, tuple(dict.fromkeys(missing)))
    leftover = _COMMAND.search(out)
    if leftover:
        return Unresolved(text, (leftover.group(0),))
    return out


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _lines(text: str, path: Path) -> list[list[str]]:
    """Shell words per logical line (`\\` continuations joined, comments and quotes removed
    as the shell does; `$...` left for `expand`)."""
    joined = text.replace("\\\r\n", " ").replace("\\\n", " ")
    out = []
    for number, line in enumerate(joined.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            raise UserError(
                f"{path}:{number}: cannot read this line as shell ({e}): {line.strip()[:70]}",
                hint="give a JSON/YAML mapping, KEY=value lines, or an sft.sh-style command",
            ) from None
        if words:
            out.append(words)
    return out


def parse_shell(text: str, path: Path, given: Mapping[str, str]) -> ShellSettings:
    """Settings from shell text: assignments and `--key value` / `--key=value` arguments,
    with variables expanded (`given`: the `--set` values)."""
    env: dict[str, str] = dict(given)
    assigned: dict[str, str] = {}
    settings: dict[str, Any] = {}
    result = ShellSettings(settings)
    args: list[str] = []
    for words in _lines(text, path):
        if words[0] in ("source", "."):
            result.notes.append(
                f"`{' '.join(words)[:70]}` is not read: give what it sets with --set NAME=value"
            )
            continue
        i = 0
        if words[0] in ("export", "declare", "local", "readonly"):
            i = 1
            while i < len(words) and words[i].startswith("-"):
                i += 1
        while i < len(words) and (match := _ASSIGNMENT.match(words[i])):
            name, raw = match.group(1), match.group(2)
            assigned[name] = raw
            i += 1
            if name in given:
                settings[name] = given[name]
                continue
            value = expand(raw, env)
            if isinstance(value, str):
                env[name] = value
            else:
                env.pop(name, None)
            settings[name] = value
        args += words[i:]
    _vila_defaults(env, assigned, args, result)
    i = 0
    while i < len(args):
        word = args[i]
        if word.startswith("--") and len(word) > 2:
            name, eq, raw = word[2:].partition("=")
            if not eq:
                following = args[i + 1] if i + 1 < len(args) else None
                if following is not None and not following.startswith("--"):
                    raw = following
                    i += 1
                else:
                    raw = "True"
            settings[name] = expand(raw, env)
        i += 1
    used = _used_names(args, assigned)
    for name in sorted(used):
        if name in env:
            result.variables[name] = env[name]
    # A variable the arguments use reaches the settings through them; the others (VILA's
    # `DATA_MIXTURE=...`, `DEFAULT_GLOBAL_TRAIN_BATCH_SIZE=...`) are settings themselves.
    twins = {f"DEFAULT_{name}" for name in used}
    for name in used | twins:
        settings.pop(name, None)
    if not settings:
        raise UserError(
            f"{path}: found no settings",
            hint="give a JSON/YAML mapping, KEY=value lines, or --key value arguments",
        )
    return result


def _used_names(tokens: list[str], assigned: Mapping[str, str]) -> set[str]:
    names: set[str] = set()
    for text in [*tokens, *assigned.values()]:
        for match in _EXPANSION.finditer(text):
            names.add(match.group("braced") or match.group("plain"))
    return names


def _vila_defaults(
    env: dict[str, str], assigned: Mapping[str, str], tokens: list[str], result: ShellSettings
) -> None:
    """`$X` never assigned, with `DEFAULT_X` assigned: X takes its value, as VILA's
    scripts/setups/train.sh does (`X=${X:-$DEFAULT_X}`)."""
    for name in sorted(_used_names(tokens, assigned)):
        twin = f"DEFAULT_{name}"
        if name not in env and twin in env:
            env[name] = env[twin]
            result.notes.append(
                f"${name} is not set in the file: it takes ${twin}={env[twin]}, as VILA's "
                "scripts/setups/train.sh does (--set to choose another)"
            )
