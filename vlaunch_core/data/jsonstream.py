"""Stream the records of a JSON array or JSON Lines file without loading it whole.

JSON Lines is read line by line. A JSON array is read in chunks and each element is decoded
with `json.JSONDecoder.raw_decode`, so memory stays at about one element plus one chunk.
Every record carries its 0-based index in the file and its byte span, so a dataset can later
read one record back with a seek (`read_record`).

An invalid line in a JSON Lines file is reported and reading goes on with the next line. An
invalid element in a JSON array ends the file: there is no reliable way to find where the
next element starts, so the rest of the file is reported as not read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal

CHUNK_CHARS = 1 << 20
#: An array element still undecodable after this many characters is reported as invalid
#: instead of reading the rest of the file into memory looking for its end.
MAX_ELEMENT_CHARS = 256 << 20

_WS = " \t\r\n"
_TOO_DEEP = "JSON nested too deeply to read (a sample nests a few levels)"
_DECODER = json.JSONDecoder()

Layout = Literal["array", "lines"]


@dataclass(frozen=True)
class Record:
    """One element of a dataset file: its value, or why it could not be decoded."""

    index: int
    offset: int
    length: int
    value: Any = None
    error: str | None = None
    fatal: bool = False
    """The file cannot be read past this record (an invalid element of a JSON array)."""


def detect_layout(path: str | os.PathLike[str]) -> Layout:
    """`array` if the first non-blank character is `[`, else `lines`."""
    with open(path, "rb") as f:
        while True:
            block = f.read(4096)
            if not block:
                return "lines"
            stripped = block.lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
            if stripped:
                return "array" if stripped[:1] == b"[" else "lines"


def iter_records(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Every record of `path` in order (a JSON array or JSON Lines, detected)."""
    if detect_layout(path) == "array":
        with open(path, "rb") as raw:
            bom = 3 if raw.read(3) == b"\xef\xbb\xbf" else 0
        with open(path, encoding="utf-8-sig", newline="") as f:
            try:
                yield from _array_records(_Buffer(f, bom))
            except UnicodeDecodeError as e:
                yield Record(0, 0, 0, error=f"not UTF-8 text: {e}", fatal=True)
    else:
        yield from _line_records(path)


def read_record(path: str | os.PathLike[str], offset: int, length: int) -> Any:
    """The record stored at this byte span (from a `Record` of `iter_records`)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return json.loads(f.read(length).decode("utf-8"))


def _line_records(path: str | os.PathLike[str]) -> Iterator[Record]:
    index = 0
    offset = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            start = offset
            offset += len(raw)
            body = raw.rstrip(b"\r\n")
            if line_no == 1 and body.startswith(b"\xef\xbb\xbf"):
                start, body = start + 3, body[3:]
            if not body.strip():
                continue
            try:
                value = json.loads(body.decode("utf-8"))
            except RecursionError:
                yield Record(index, start, len(body), error=f"line {line_no}: {_TOO_DEEP}")
                index += 1
                continue
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                if index == 0 and body.strip() in (b"{", b"{ "):
                    yield Record(
                        0,
                        start,
                        0,
                        fatal=True,
                        error=(
                            "the file is one JSON object spread over lines; a dataset is a JSON "
                            "array of samples or JSON Lines (one sample per line)"
                        ),
                    )
                    return
                yield Record(index, start, len(body), error=f"invalid JSON on line {line_no}: {e}")
            else:
                yield Record(index, start, len(body), value=value)
            index += 1


class _Buffer:
    """A text window over a file that knows the byte offset of every position in it."""

    def __init__(self, f: IO[str], first_byte: int = 0) -> None:
        self.f = f
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._mark_pos = 0  # a position in buf ...
        self._mark_byte = first_byte  # ... and its byte offset in the file

    def fill(self, want: int = CHUNK_CHARS) -> bool:
        """Append more of the file, dropping what lies before `pos`."""
        if self.eof:
            return False
        more = self.f.read(want)
        if not more:
            self.eof = True
            return False
        if self.pos > 0:
            self._mark_byte = self.byte_at(self.pos)
            self.buf = self.buf[self.pos :]
            self._mark_pos = self.pos = 0
        self.buf += more
        return True

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the file), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def byte_at(self, pos: int) -> int:
        """Byte offset of `pos`; positions must be asked for in increasing order."""
        self._mark_byte += len(self.buf[self._mark_pos : pos].encode("utf-8"))
        self._mark_pos = pos
        return self._mark_byte

    def decode(self) -> tuple[Any, int, str | None]:
        """Decode the element at `pos`, reading more of the file while it is incomplete."""
        want = CHUNK_CHARS
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except RecursionError:
                return None, 0, _TOO_DEEP
            except json.JSONDecodeError as e:
                if len(self.buf) - self.pos < MAX_ELEMENT_CHARS and self.fill(want):
                    want = min(want * 2, 64 << 20)
                    continue
                return None, 0, f"invalid JSON: {e.msg}"
            # A number or literal may end at the buffer's end and go on in the file.
            if end == len(self.buf) and self.fill(want):
                continue
            return value, end, None


def _array_records(b: _Buffer) -> Iterator[Record]:
    if b.peek() != "[":
        yield Record(0, 0, 0, error="expected '[' at the start of a JSON array", fatal=True)
        return
    b.pos += 1
    index = 0
    if b.peek() == "]":
        b.pos += 1
        if b.peek():
            yield Record(0, b.byte_at(b.pos), 0, error="text after the closing ']'", fatal=True)
        return
    while True:
        if not b.peek():
            yield Record(index, b.byte_at(b.pos), 0, error="unexpected end of file", fatal=True)
            return
        start = b.byte_at(b.pos)
        value, end, error = b.decode()
        if error is not None:
            yield Record(
                index,
                b.byte_at(b.pos),
                0,
                error=f"{error} (element starting at byte {start})",
                fatal=True,
            )
            return
        b.pos = end
        yield Record(index, start, b.byte_at(end) - start, value=value)
        index += 1
        ch = b.peek()
        if ch == ",":
            b.pos += 1
            continue
        if ch == "]":
            b.pos += 1
            if b.peek():
                yield Record(
                    index, b.byte_at(b.pos), 0, error="text after the closing ']'", fatal=True
                )
            return
        found = repr(ch) if ch else "end of file"
        yield Record(
            index,
            b.byte_at(b.pos),
            0,
            error=f"expected ',' or ']' after element {index - 1}, found {found}",
            fatal=True,
        )
        return
