"""Tables that read at any width: on a terminal a rich table whose cells wrap and are never
cut; piped or redirected, plain text with one row per line and nothing cut (no box, no
colour), so that names, paths and numbers can be copied or grepped whatever the width.

Commands print tables only through `print_table`; `--json` stays the machine-readable form.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

#: A cell: text, or a rich `Text` (styled on a terminal, its plain text otherwise).
Cell = Any


@dataclass(frozen=True)
class Column:
    name: str
    right: bool = False
    """Right-justified (numbers)."""
    keep: bool = False
    """Text to read or type in full (names, paths): on a terminal it is wrapped only when
    the others cannot make room."""


def is_terminal(file: IO[str] | None = None) -> bool:
    stream = file or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def plain(cell: Cell) -> str:
    text = getattr(cell, "plain", cell)
    return "" if text is None else str(text)


def print_table(
    title: str | None,
    columns: Sequence[Column | str],
    rows: Sequence[Sequence[Cell]],
    *,
    caption: str | None = None,
    show_header: bool = True,
    file: IO[str] | None = None,
) -> None:
    """A table on `file` (stdout): rich on a terminal, plain aligned text otherwise."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    out = file or sys.stdout
    if is_terminal(out):
        _rich(title, cols, rows, caption, show_header, out)
    else:
        out.write(plain_table(title, cols, rows, caption=caption, show_header=show_header))
        out.flush()


def plain_table(
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    caption: str | None = None,
    show_header: bool = True,
) -> str:
    """The table as plain text: columns aligned to their widest cell, two spaces apart, a
    cell's lines joined with "; ". Never cut, whatever the width."""
    body = [[plain(c).replace("\n", "; ") for c in row] for row in rows]
    head = [c.name for c in columns] if show_header else None
    widths = [
        max([len(head[i]) if head else 0, *(len(r[i]) for r in body)]) for i in range(len(columns))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, (cell, col) in enumerate(zip(cells, columns, strict=True)):
            last = i == len(columns) - 1
            if col.right:
                parts.append(cell.rjust(widths[i]))
            else:
                parts.append(cell if last else cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    lines = [title] if title else []
    if head:
        lines.append(line(head))
    lines += [line(r) for r in body]
    if caption:
        lines.append(caption)
    return "\n".join(lines) + "\n"


def _rich(
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    caption: str | None,
    show_header: bool,
    out: IO[str],
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption, show_header=show_header, title_justify="left")
    for col in columns:
        table.add_column(
            col.name,
            justify="right" if col.right else "left",
            overflow="fold",  # wrapped, never cut with an ellipsis
            no_wrap=col.keep,
            min_width=min(len(col.name), 12) if col.keep else None,
        )
    for row in rows:
        table.add_row(*(c if hasattr(c, "plain") else str(c) for c in row))
    Console(file=out).print(table)
