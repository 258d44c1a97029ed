"""Framing of the donkeycar simulator protocol: a TCP stream of JSON objects, newline-ended
from the simulator, back to back with no terminator from gym-donkeycar clients. Pure: bytes
in, messages out (docs/donkey-protocol.md, sections 1 and 8).

``JsonStream`` splits any byte chunks into whole objects with a string-aware brace count, so
``{..}{..}``, newline-separated objects, whitespace and braces inside strings all work.
Numbers written with a comma decimal separator (a simulator running in a comma locale) are
repaired before parsing. What cannot be used is counted, never raised.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a camera frame in base64 is ~10 KiB; this is a bound
# "key": 12,5 → "key": 12.5 (a number straight after a key; valid JSON never has a digit
# right after the comma that ends a value)
_SPECIAL = re.compile(rb'[{}"]')  # what matters outside a string
_IN_STRING = re.compile(rb'["\\]')  # and inside one
_COMMA_DECIMAL = re.compile(rb'("[A-Za-z_][A-Za-z0-9_]*"\s*:\s*-?\d+),(\d+)')


@dataclass
class StreamCounts:
    messages: int = 0
    malformed: int = 0  # not JSON, not an object, or no string msg_type
    oversize: int = 0
    skipped_bytes: int = 0  # bytes between objects that were not whitespace
    comma_decimals: int = 0  # messages that needed the comma repair


@dataclass
class JsonStream:
    """Feed bytes, get messages (dicts with a ``msg_type``)."""

    max_bytes: int = MAX_MESSAGE_BYTES
    counts: StreamCounts = field(default_factory=StreamCounts)
    errors: list[str] = field(default_factory=list)  # the latest few, for logs
    _buf: bytearray = field(default_factory=bytearray, repr=False)
    _pos: int = 0  # where the scan goes on
    _start: int = -1  # the current object's "{", or -1 between objects
    _depth: int = 0
    _in_string: bool = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The whole messages completed by ``data``. Scans from special byte to special
        byte with a regex, so a camera frame's long base64 string costs one C search."""
        self._buf += data
        out: list[dict[str, Any]] = []
        buf = self._buf
        i, n = self._pos, len(buf)
        while i < n:
            if self._start < 0:  # between objects: find the next one
                j = buf.find(b"{", i)
                stop = n if j < 0 else j
                self.counts.skipped_bytes += len(bytes(buf[i:stop]).translate(None, b" \t\r\n"))
                if j < 0:
                    i = n
                    break
                self._start, self._depth, i = j, 1, j + 1
                continue
            found = (_IN_STRING if self._in_string else _SPECIAL).search(buf, i)
            k = n if found is None else found.start()
            if k - self._start + 1 > self.max_bytes:
                self.counts.oversize += 1
                self._note(f"a message over {self.max_bytes} bytes was dropped")
                i = self._start + self.max_bytes + 1  # the next object may follow
                self._start, self._in_string = -1, False
                continue
            if found is None:
                i = n
                break
            byte = buf[k]
            i = k + 1
            if byte == 0x5C:  # (in a string) escapes the next byte, which may not have
                i = k + 2  # arrived yet: the scan then resumes past it
            elif byte == 0x22:  # "
                self._in_string = not self._in_string
            elif byte == 0x7B:  # {
                self._depth += 1
            else:  # }
                self._depth -= 1
                if self._depth == 0:
                    message = self._decode(bytes(buf[self._start:k + 1]))
                    if message is not None:
                        out.append(message)
                    self._start = -1
        # Keep only what an unfinished object still needs.
        keep = self._start if self._start >= 0 else min(i, len(buf))
        del buf[:keep]
        self._pos = i - keep
        if self._start >= 0:
            self._start = 0
        return out

    def _decode(self, raw: bytes) -> dict[str, Any] | None:
        fixed = _COMMA_DECIMAL.sub(rb"\1.\2", raw)
        if fixed != raw:
            self.counts.comma_decimals += 1
        try:
            message = json.loads(fixed.decode("utf-8"))
        # ValueError: bad UTF-8, bad JSON, or an integer of over 4300 digits;
        # RecursionError: nested too deeply
        except (ValueError, RecursionError) as exc:
            return self._malformed(f"not JSON ({exc}): {raw[:80]!r}")
        if not isinstance(message, dict) or not isinstance(message.get("msg_type"), str):
            return self._malformed(f"no msg_type: {raw[:80]!r}")
        self.counts.messages += 1
        return message

    def _malformed(self, why: str) -> None:
        self.counts.malformed += 1
        self._note(why)
        return None

    def _note(self, why: str) -> None:
        self.errors = [*self.errors[-9:], why]


def encode_line(message: dict[str, Any]) -> bytes:
    """A message as the simulator sends it: compact JSON and one newline."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def encode_client(message: dict[str, Any]) -> bytes:
    """A message as gym-donkeycar sends it: default separators, no terminator (some
    simulator builds drop a piece that does not end in ``}``)."""
    return json.dumps(message, allow_nan=False).encode("utf-8")


def number(value: Any, default: float = math.nan) -> float:
    """A protocol number: a JSON number, or a string (clients send strings), with a comma
    decimal separator accepted; ``default`` when it is neither or not finite."""
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        try:
            result = float(value)
        except OverflowError:  # an integer beyond any float
            return default
    elif isinstance(value, str):
        try:
            result = float(value.strip().replace(",", "."))
        except ValueError:
            return default
    else:
        return default
    return result if math.isfinite(result) else default
