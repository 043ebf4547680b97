"""``format: json``: the data message ``{"gateway","device","seq","samples":[...]}``.

The buffer stores each batch's samples already encoded (a JSON array), so a
send only wraps it in the envelope.  The envelope is measured as encoded,
never estimated: the gateway id and device name as ``json.dumps`` escapes them
(non-ASCII as ``\\uXXXX``) and ``seq`` at its largest (19 digits, SQLite's
INTEGER max), so a message is never larger than ``max_message``.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from agent.sdk.readings import NOT_FINITE, Sample

if TYPE_CHECKING:
    from agent.pipeline.buffer import StoredBatch

__all__ = ["JsonEncoder", "encode_sample", "pack_batches", "split_events"]

# The largest seq SQLite's AUTOINCREMENT can give (2**63 - 1): 19 digits.
MAX_SEQ = 2**63 - 1
_TOO_LARGE = "value too large for max_message"
# A stored payload is the samples array, then this and the events array
# when the batch carries alarm events (so they land at the message level).
_EVENTS_MARK = b'],"events":['


def split_events(payload: bytes) -> tuple[bytes, bytes | None]:
    """A stored payload as (samples array, events array or None)."""
    # Keys inside samples are quoted tag names, and a string can never hold
    # an unescaped quote, so the marker is only ever the events suffix
    # (rfind: a tag named "events" holding a list comes earlier).
    at = payload.rfind(_EVENTS_MARK)
    if at < 0 or not payload.endswith(b"]"):
        return payload, None
    return payload[: at + 1], payload[at + len(_EVENTS_MARK) - 1 :]


class JsonEncoder:
    """Wraps a stored batch in the json envelope of one gateway."""

    def __init__(self, gateway_id: str) -> None:
        self.gateway_id = gateway_id

    def _head(self, device: str, seq: int) -> bytes:
        head = json.dumps({"gateway": self.gateway_id, "device": device, "seq": seq},
                          separators=(",", ":"))
        return head[:-1].encode() + b',"samples":'

    def overhead(self, device: str) -> int:
        """Bytes the envelope adds around the samples array of ``device``, at any seq."""
        return len(self._head(device, MAX_SEQ)) + 1

    def encode(self, batch: StoredBatch) -> bytes:
        return self._head(batch.device, batch.seq) + batch.samples_json + b"}"


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def encode_sample(sample: Sample) -> bytes:
    """One sample as compact JSON; a non-finite number becomes a bad reading."""
    obj = sample.to_json_obj()
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        values = dict(sample.values)
        bad = dict(sample.bad)
        for tag, value in sample.values.items():
            if not _finite(value):
                values[tag] = None
                bad[tag] = NOT_FINITE
        fixed = Sample(sample.ts, values, bad, sample.uncertain, sample.clock)
        return json.dumps(fixed.to_json_obj(), separators=(",", ":"), default=str).encode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), default=str).encode()


def _split_sample(sample: Sample, limit: int) -> list[bytes]:
    """A sample too large for one message, as several with the same ts."""
    parts: list[bytes] = []
    tags = list(sample.values)
    chunk = max(1, len(tags) // 2)
    start = 0
    while start < len(tags):
        names = tags[start : start + chunk]
        piece = Sample(
            sample.ts,
            {t: sample.values[t] for t in names},
            {t: sample.bad[t] for t in names if t in sample.bad},
            {t: sample.uncertain[t] for t in names if t in sample.uncertain},
            sample.clock,
        )
        encoded = encode_sample(piece)
        if len(encoded) > limit and chunk > 1:
            chunk //= 2
            continue
        if len(encoded) > limit:
            # One tag alone does not fit a message: send it as a bad reading
            # rather than a message the broker would refuse.
            piece = Sample(sample.ts, {names[0]: None}, {names[0]: _TOO_LARGE}, {}, sample.clock)
            encoded = encode_sample(piece)
        parts.append(encoded)
        start += len(names)
    return parts


def _encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), default=str).encode()


def _events_growth(have: list[bytes], extra: list[bytes]) -> int:
    """Bytes ``extra`` events add to a message already holding ``have``."""
    if not extra:
        return 0
    joined = sum(len(e) for e in extra) + len(extra) - 1
    # The first events bring ',"events":[' and ']' (12 bytes); later ones a comma.
    return joined + (1 if have else len(_EVENTS_MARK) - 1 + 1)


def pack_batches(samples: list[Sample], limit: int) -> list[tuple[bytes, int]]:
    """Encode samples into JSON arrays of at most ``limit`` bytes each.

    Returns (payload, sample count) pairs, in order; a payload is the samples
    array followed by ``,"events":[...]`` when its samples carry alarm events
    (a sample's events go with its first piece).
    """
    out: list[tuple[bytes, int]] = []
    current: list[bytes] = []
    events: list[bytes] = []
    size = 2

    def close() -> None:
        body = b"[" + b",".join(current) + b"]"
        if events:
            body += b',"events":[' + b",".join(events) + b"]"
        out.append((body, len(current)))

    for sample in samples:
        encoded = encode_sample(sample)
        pieces = [encoded] if len(encoded) + 2 <= limit else _split_sample(sample, limit - 2)
        extra = [_encode_event(e) for e in sample.events]
        for piece in pieces:
            # size is exact: "[" + "]", a comma before every piece but the
            # first, and the events suffix.
            grow = len(piece) + (1 if current else 0) + _events_growth(events, extra)
            if current and size + grow > limit:
                close()
                current, events, size = [], [], 2
                grow = len(piece) + _events_growth(events, extra)
            size += grow
            current.append(piece)
            events.extend(extra)
            extra = []
    if current:
        close()
    return out
