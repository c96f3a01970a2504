"""The careful reader: rewrites a log file that DuckDB cannot read whole into clean JSON Lines, record by record.

Used for files DuckDB refuses (invalid UTF-8, a truncated gzip, an oversized line, malformed JSON) and for
JSON documents too large to hold in memory. The output has one line per input record, in order, so a
record's line number is its position; a record that cannot be kept is written as a ``null`` placeholder
line and reported as a :class:`Problem` instead. Large container documents (``{"Records": [...]}``, bare
arrays, ...) are split element by element with a bounded buffer: each element is written wrapped in its
container (``{"Records": [element]}``) so the SQL container logic applies to it unchanged.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

CHUNK_BYTES = 4 << 20
MAX_RECORD_BYTES = 16 << 20  # one record (a JSON Lines line or a container element)
MAX_DEPTH = 64  # nesting of a record (real control-plane records nest less than 20 levels)
RAW_KEEP_CHARS = 1 << 20
PLACEHOLDER = b"null\n"
# Containers whose elements can be streamed out of a large document (see formats/containers.py).
STREAM_KEYS = frozenset({"Records", "records", "value", "entries", "Events", "events", "results"})
_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_SURROGATES = re.compile("[\udc80-\udcff]")
# A JSON string, a bracket, or (last) a quote that opens a string not ended in the text.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]|"')


@dataclass(frozen=True)
class Problem:
    """A record (or the rest of a file) that was not written as itself; ``repaired`` ones were written fixed."""

    position: int
    reason: str
    raw: str
    raw_hex: str | None = None
    repaired: bool = False


@dataclass
class CleanFile:
    """What :func:`rewrite` wrote: ``lines`` lines (records and placeholders) and the problems met."""

    lines: int
    problems: list[Problem]


class _TruncatedError(Exception):
    """The input ended inside a record."""


class _Inflate(io.RawIOBase):
    """Gzip (any number of members) that hands out every byte before a break, then ends with ``truncated`` set."""

    def __init__(self, path: Path) -> None:
        self.source = path.open("rb")
        self.inflater = zlib.decompressobj(wbits=31)
        self.fresh = True  # no input given to the current member yet
        self.out = b""
        self.truncated = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.out:
            if self.inflater.eof:
                rest = self.inflater.unused_data
                self.inflater, self.fresh = zlib.decompressobj(wbits=31), True
                if rest:
                    self.fresh = False
                    self.out = self.inflater.decompress(rest)
                    continue
            data = self.source.read(CHUNK_BYTES)
            if not data:
                self.truncated = not self.fresh
                return 0
            self.fresh = False
            try:
                self.out = self.inflater.decompress(data)
            except zlib.error:
                self.truncated = True
                return 0
        count = min(len(buffer), len(self.out))
        buffer[:count] = self.out[:count]
        self.out = self.out[count:]
        return count

    def close(self) -> None:
        self.source.close()
        super().close()


def _open(path: Path, compression: str) -> tuple[BinaryIO, _Inflate | None]:
    """The decompressed stream, and the inflater to ask whether it broke (None for plain files)."""
    if compression == "gzip":
        inflate = _Inflate(path)
        return io.BufferedReader(inflate, CHUNK_BYTES), inflate
    return path.open("rb"), None


def _truncation_reason(path: Path, gzip_broken: bool, offset: int) -> str:
    if gzip_broken:
        return f"truncated gzip at byte {offset} of the decompressed data ({path.stat().st_size} bytes compressed)"
    return f"file ends inside a record at byte {offset}"


def depth_of(text: str) -> int:
    """Deepest nesting of arrays and objects in a JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    for token in _TOKEN.finditer(text):
        char = token.group()
        if char == '"':  # a string that does not end: the rest is inside it
            break
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _check_record(text: str, *, parsed: bool = False) -> str | None:
    """Why a record text cannot be kept (not JSON, unless already ``parsed``; too deep), else None."""
    try:
        if not parsed:
            json.loads(text)
    except RecursionError:
        return f"nested deeper than {MAX_DEPTH} levels"
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if text.count("[") + text.count("{") > MAX_DEPTH and depth_of(text) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    return None


def _decode(data: bytes, position: int, offset: int) -> tuple[str, Problem | None]:
    """UTF-8 text of a record; invalid bytes become U+FFFD and the original bytes are kept in hex."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", errors="replace")
        note = Problem(
            position,
            f"invalid UTF-8 at byte {offset + exc.start}: decoded with U+FFFD replacement",
            text[:RAW_KEEP_CHARS],
            data[: RAW_KEEP_CHARS // 2].hex(),
            repaired=True,
        )
        return text, note


def rewrite(path: Path, compression: str, reader: str, out: Path) -> CleanFile:
    """Rewrite ``path`` (``reader`` json or jsonl) into clean JSON Lines at ``out``."""
    result = CleanFile(0, [])
    with out.open("wb") as sink:
        source = _lines(path, compression) if reader == "jsonl" else _document(path, compression)
        for text, problem in source:
            if problem is not None:
                result.problems.append(_at(problem, result.lines))
            if text is None:
                sink.write(PLACEHOLDER)
            else:
                sink.write(text.replace("\n", " ").replace("\r", " ").encode() + b"\n")
            result.lines += 1
    return result


def _at(problem: Problem, position: int) -> Problem:
    return Problem(position, problem.reason, problem.raw, problem.raw_hex, problem.repaired)


Item = tuple[str | None, Problem | None]


def _lines(path: Path, compression: str) -> Iterator[Item]:
    """JSON Lines: each non-blank line is a record, read with a bounded buffer."""
    offset = 0
    handle, inflate = _open(path, compression)
    with handle:
        while True:
            start = offset
            line = handle.readline(MAX_RECORD_BYTES + 1)
            if not line:
                return
            offset += len(line)
            broken = inflate is not None and inflate.truncated and not line.endswith(b"\n")
            if broken:
                reason = _truncation_reason(path, True, offset)
                yield None, Problem(0, reason, line[:RAW_KEEP_CHARS].decode(errors="replace"))
                return
            if len(line) > MAX_RECORD_BYTES:
                offset = _skip_line(handle, offset)
                yield None, Problem(0, f"record of more than {MAX_RECORD_BYTES} bytes at byte {start}", "")
                continue
            if line.strip():
                yield _line_item(line.rstrip(b"\r\n"), start)


def _skip_line(handle: BinaryIO, offset: int) -> int:
    """Read past the rest of an oversized line."""
    while True:
        piece = handle.readline(CHUNK_BYTES)
        offset += len(piece)
        if not piece or piece.endswith(b"\n"):
            return offset


def _line_item(data: bytes, start: int) -> Item:
    text, note = _decode(data, 0, start)
    reason = _check_record(text)
    if reason is None:
        return text, note
    return None, Problem(0, reason, text[:RAW_KEEP_CHARS], note.raw_hex if note else None)


class _Buffer:
    """Decoded text of a stream with a moving start, refilled on demand; ``consumed`` counts dropped bytes."""

    def __init__(self, path: Path, compression: str) -> None:
        self.handle, self.inflate = _open(path, compression)
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.text = ""
        self.pos = 0
        self.consumed = 0  # bytes before text[0]
        self.ended = False
        self.broken = False

    def fill(self) -> bool:
        """Read one more chunk; False at the end of the input."""
        if self.ended:
            return False
        data = self.handle.read(CHUNK_BYTES)
        self.broken = self.inflate is not None and self.inflate.truncated
        if self.pos:
            self.consumed += len(self.text[: self.pos].encode("utf-8", "surrogateescape"))
            self.text, self.pos = self.text[self.pos :], 0
        self.text += self.decoder.decode(data, final=not data)
        if not data:
            self.ended = True
            self.handle.close()
            return False
        return True

    def byte_offset(self, index: int) -> int:
        return self.consumed + len(self.text[:index].encode("utf-8", "surrogateescape"))

    def skip_ws(self) -> str:
        """The next non-blank character (refilling as needed), or '' at the end."""
        while True:
            match = _WHITESPACE.match(self.text, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return self.text[self.pos] if self.pos < len(self.text) else ""

    def value(self) -> str:
        """The raw text of the next JSON value; raises _TruncatedError, ValueError (malformed) or OverflowError."""
        while True:
            try:
                _, end = _DECODER.raw_decode(self.text, self.pos)
            except RecursionError:  # too deep to parse: taken whole by its brackets, refused by _record
                return self._take(self._nested_end())
            except json.JSONDecodeError as exc:
                # an error close to the end of the buffer may only mean the value continues in the next chunk
                if "Unterminated" not in exc.msg and exc.pos < len(self.text) - 64:
                    raise ValueError(f"not valid JSON: {exc.msg}") from None
                if len(self.text) - self.pos > MAX_RECORD_BYTES:
                    raise OverflowError from None
                if not self.fill():
                    try:
                        _, end = _DECODER.raw_decode(self.text, self.pos)
                    except (json.JSONDecodeError, RecursionError):
                        raise _TruncatedError from None
                    return self._take(end)
                continue
            if end == len(self.text) and not self.ended:
                self.fill()  # a number could continue in the next chunk
                continue
            return self._take(end)

    def _nested_end(self) -> int:
        """The end of the value at ``pos`` found by matching its brackets (for values too deep to parse)."""
        while True:
            depth = 0
            for token in _TOKEN.finditer(self.text, self.pos):
                char = token.group()
                if char == '"':
                    break  # a string continues past the buffer
                depth += 1 if char in "[{" else -1 if char in "]}" else 0
                if depth == 0:
                    return token.end()
            if len(self.text) - self.pos > MAX_RECORD_BYTES:
                raise OverflowError
            if not self.fill():
                raise _TruncatedError

    def _take(self, end: int) -> str:
        text = self.text[self.pos : end]
        self.pos = end
        return text

    def expect(self, char: str) -> bool:
        if self.skip_ws() == char:
            self.pos += 1
            return True
        return False


def _document(path: Path, compression: str) -> Iterator[Item]:
    """One JSON document: a container's elements one by one, or the whole document as one record."""
    buf = _Buffer(path, compression)
    try:
        yield from _document_items(buf)
    except _TruncatedError:
        yield None, _tail(buf, _truncation_reason(path, buf.broken, buf.byte_offset(len(buf.text))))
    except OverflowError:
        at = buf.byte_offset(buf.pos)
        yield None, _tail(buf, f"record of more than {MAX_RECORD_BYTES} bytes at byte {at}; rest of file not read")
    except ValueError as exc:
        at = buf.byte_offset(buf.pos)
        if buf.broken:
            reason = _truncation_reason(path, True, buf.byte_offset(len(buf.text)))
        else:
            reason = f"{exc} at byte {at}; rest of file not read"
        yield None, _tail(buf, reason)
    finally:
        if not buf.ended:
            buf.handle.close()


def _tail(buf: _Buffer, reason: str) -> Problem:
    """The rest of the document from where reading stopped (invalid UTF-8 shown as U+FFFD)."""
    tail = buf.text[buf.pos : buf.pos + RAW_KEEP_CHARS].encode("utf-8", "surrogateescape")
    return Problem(0, reason, tail.decode("utf-8", errors="replace"))


def _document_items(buf: _Buffer) -> Iterator[Item]:
    first = buf.skip_ws()
    if first == "[":
        buf.pos += 1
        yield from _elements(buf, "[", "]")
        return
    if first != "{":
        yield _record(buf, buf.value())
        return
    start = buf.pos
    buf.pos += 1
    if buf.skip_ws() == '"':
        key = json.loads(buf.value())
        if key in STREAM_KEYS and buf.expect(":") and buf.skip_ws() == "[":
            buf.pos += 1
            yield from _elements(buf, '{"' + key + '":[', "]}")
            return
    buf.pos = start
    yield _record(buf, buf.value())


def _elements(buf: _Buffer, prefix: str, suffix: str) -> Iterator[Item]:
    """The elements of the array at ``buf.pos`` (just past ``[``), each wrapped as ``prefix element suffix``."""
    if buf.skip_ws() == "]":
        return
    while True:
        buf.skip_ws()
        text, problem = _record(buf, buf.value())
        yield (prefix + text + suffix if text is not None else None), problem
        char = buf.skip_ws()
        if char == ",":
            buf.pos += 1
            continue
        if char in {"]", ""}:
            if char == "" and buf.broken:
                raise _TruncatedError
            return
        raise ValueError(f"not valid JSON: expected ',' or ']', found {char!r}")


def _record(buf: _Buffer, text: str) -> Item:
    """A value just read from ``buf`` (so valid JSON): repaired if not UTF-8, refused if too deep."""
    note = None
    if _SURROGATES.search(text):
        original = text.encode("utf-8", "surrogateescape")
        text, note = _decode(original, 0, buf.byte_offset(buf.pos - len(text)))
    reason = _check_record(text, parsed=True)
    if reason is None:
        return text, note
    return None, Problem(0, reason, text[:RAW_KEEP_CHARS], note.raw_hex if note else None)
