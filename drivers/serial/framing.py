"""Cut a byte stream into frames: terminator, start marker, fixed length.

Memory is bounded whatever arrives: the buffer never holds more than
``max_length`` bytes plus the chunk being looked at, and a frame that grows
past ``max_length`` is dropped together with everything up to the next
terminator (we cannot know where inside the garbage a real frame began).

The framer never raises on input; it reports what it dropped by reason so
the driver can count it.  It is plain synchronous code fed from the
protocol's ``data_received``.
"""

from __future__ import annotations

from collections import Counter

from drivers.serial.options import FrameConfig, to_bytes

__all__ = ["Framer"]


class Framer:
    """Feed bytes in, get whole frames (markers removed) out.

    Drop reasons: ``frame_too_long`` (no terminator within max_length),
    ``noise`` (bytes outside start..terminator), ``wrong_length`` (a
    terminated frame that is not the fixed length).
    """

    __slots__ = ("_buf", "_discarding", "_end", "_length", "_max", "_start", "dropped")

    def __init__(self, config: FrameConfig) -> None:
        self._end = config.end
        self._start = to_bytes(config.start) if config.start is not None else None
        self._length = config.length
        self._max = config.max_length
        self._buf = b""
        # True after an overlong frame: skip to the next terminator.
        self._discarding = False
        self.dropped: Counter[str] = Counter()

    def reset(self) -> None:
        """Forget a partial frame (after a reconnect, or before a poll request)."""
        self._buf = b""
        self._discarding = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self._end is not None:
            return self._feed_terminated(data, self._end)
        return self._feed_fixed(data)

    # -- terminator (with optional start marker and length check) -------
    def _feed_terminated(self, data: bytes, end: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        parts = buf.split(end)
        rest = parts.pop()
        frames: list[bytes] = []
        if parts and self._discarding:
            # The first terminator ends the overlong frame we were skipping.
            parts[0] = b""
            self._discarding = False
        for part in parts:
            frame = self._accept(part)
            if frame is not None:
                frames.append(frame)
        if self._start is not None:
            rest = self._trim_to_start(rest)
        elif self._discarding or len(rest) > self._max:
            if not self._discarding:
                self.dropped["frame_too_long"] += 1
                self._discarding = True
            # Keep only what could be the beginning of a split terminator.
            rest = rest[-(len(end) - 1):] if len(end) > 1 else b""
        self._buf = rest
        return frames

    def _trim_to_start(self, rest: bytes) -> bytes:
        """The unterminated tail, from its last start marker on.

        With a start marker we resynchronise on the next marker, so an
        overlong or broken frame is simply dropped; no skipping mode needed.
        """
        assert self._start is not None
        at = rest.rfind(self._start)
        if at < 0:
            # Keep only a possible partial marker: noise must not pile up.
            keep = rest[len(rest) - (len(self._start) - 1):] if len(self._start) > 1 else b""
            if len(rest) > len(keep):
                self.dropped["noise"] += 1
            return keep
        if at > 0:
            self.dropped["noise"] += 1
            rest = rest[at:]
        if len(rest) - len(self._start) > self._max:
            self.dropped["frame_too_long"] += 1
            return b""
        return rest

    def _accept(self, part: bytes) -> bytes | None:
        if self._start is not None:
            at = part.rfind(self._start)
            if at < 0:
                if part:
                    self.dropped["noise"] += 1
                return None
            # Bytes before the last start marker are a broken frame or noise.
            if at > 0:
                self.dropped["noise"] += 1
            part = part[at + len(self._start):]
        if not part:
            return None  # blank line between frames: nothing to report
        if len(part) > self._max:
            self.dropped["frame_too_long"] += 1
            return None
        if self._length is not None and len(part) != self._length:
            self.dropped["wrong_length"] += 1
            return None
        return part

    # -- fixed length, no terminator -------------------------------------
    def _feed_fixed(self, data: bytes) -> list[bytes]:
        assert self._length is not None  # the model guarantees length or terminator
        buf = self._buf + data if self._buf else data
        frames: list[bytes] = []
        pos = 0
        size = self._length
        start = self._start
        while True:
            if start is not None:
                at = buf.find(start, pos)
                if at < 0:
                    # Keep a possible partial marker only.
                    keep_from = max(pos, len(buf) - (len(start) - 1))
                    if keep_from > pos:
                        self.dropped["noise"] += 1
                    pos = keep_from
                    break
                if at > pos:
                    self.dropped["noise"] += 1
                body = at + len(start)
                if len(buf) - body < size:
                    pos = at
                    break
                frames.append(buf[body:body + size])
                pos = body + size
            else:
                if len(buf) - pos < size:
                    break
                frames.append(buf[pos:pos + size])
                pos += size
        self._buf = buf[pos:]
        return frames
