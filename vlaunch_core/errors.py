"""User-facing errors.

A `UserError` is a mistake the user can fix (a bad config, a missing file, an impossible batch):
the CLI prints it without a traceback and exits with its `exit_code` (2 by default). Anything
else is a bug in vlaunch and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlaunch_core.secrets import redact, redact_text


class UserError(Exception):
    """An error caused by user input; printed as one actionable message, no traceback."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        """The text the CLI prints (secret-looking values redacted)."""
        text = self.message if not self.hint else f"{self.message}\n  fix: {self.hint}"
        return redact_text(text)

    def __str__(self) -> str:
        # message and fix: what a traceback shows, and what survives torch re-raising the
        # error from a DataLoader worker by its text
        return self.message if not self.hint else f"{self.message}\n  fix: {self.hint}"

    def to_json(self) -> dict[str, Any]:
        """What `--json` prints for this error."""
        return redact({"error": self.message, "fix": self.hint, "exit_code": self.exit_code})


@dataclass(frozen=True)
class Problem:
    """One problem found while validating something: where, what, and how to fix it."""

    where: str
    message: str
    hint: str | None = None

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return text if not self.hint else f"{text}\n      fix: {self.hint}"


@dataclass
class ProblemReport(UserError):
    """Several problems reported together (torchtune's `ConfigError` style)."""

    title: str
    problems: list[Problem] = field(default_factory=list)
    source: str | None = None

    def __post_init__(self) -> None:
        UserError.__init__(self, self.render())

    def to_json(self) -> dict[str, Any]:
        return redact(
            {
                "error": self.title,
                "source": self.source,
                "problems": [
                    {"where": p.where, "message": p.message, "fix": p.hint} for p in self.problems
                ],
                "exit_code": self.exit_code,
            }
        )

    def render(self) -> str:
        head = self.title if not self.source else f"{self.title} ({self.source})"
        n = len(self.problems)
        lines = [f"{head}: {n} problem{'s' if n != 1 else ''}"]
        lines += [f"  - {p.render()}" for p in self.problems]
        return redact_text("\n".join(lines))

    def __str__(self) -> str:
        return self.render()


def raise_if_any(title: str, problems: Sequence[Problem], source: str | None = None) -> None:
    if problems:
        raise ProblemReport(title=title, problems=list(problems), source=source)


def did_you_mean(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """A ' Did you mean ...?' suffix with the nearest choices, or an empty string."""
    import difflib

    pool = sorted(set(choices))
    close = difflib.get_close_matches(word, pool, n=n, cutoff=cutoff)
    if not close:
        lowered = {c.lower(): c for c in pool}
        close = [lowered[c] for c in difflib.get_close_matches(word.lower(), lowered, n=n)]
    if not close:
        return ""
    quoted = " or ".join(f"'{c}'" for c in close)
    return f" Did you mean {quoted}?"


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """'unknown <kind> 'x'. Did you mean 'y'? Known: a, b, c' as one user error."""
    known_list = sorted(set(known))
    return UserError(
        f"unknown {kind} '{name}'.{did_you_mean(name, known_list)}",
        hint=f"use one of: {', '.join(known_list)}" if known_list else None,
    )
