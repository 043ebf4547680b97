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

__all__ = ["JsonEncoder", "encode_sample", "pack_batches"]

# The largest seq SQLite's AUTOINCREMENT can give (2**63 - 1): 19 digits.
MAX_SEQ = 2**63 - 1
_TOO_LARGE = "value too large for max_message"


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


def pack_batches(samples: list[Sample], limit: int) -> list[tuple[bytes, int]]:
    """Encode samples into JSON arrays of at most ``limit`` bytes each.

    Returns (array, sample count) pairs, in order.
    """
    out: list[tuple[bytes, int]] = []
    current: list[bytes] = []
    size = 2
    for sample in samples:
        encoded = encode_sample(sample)
        pieces = [encoded] if len(encoded) + 2 <= limit else _split_sample(sample, limit - 2)
        for piece in pieces:
            # size is exact: "[" + "]" and one comma before every piece but the first.
            if current and size + 1 + len(piece) > limit:
                out.append((b"[" + b",".join(current) + b"]", len(current)))
                current, size = [], 2
            size += len(piece) + (1 if current else 0)
            current.append(piece)
    if current:
        out.append((b"[" + b",".join(current) + b"]", len(current)))
    return out
