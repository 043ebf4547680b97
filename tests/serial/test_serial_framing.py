"""Framer: every framing, noise, partial frames, bounded memory, any chunking."""

from __future__ import annotations

import random

import pytest

from drivers.serial.framing import Framer
from drivers.serial.options import FrameConfig


def feed_in_chunks(framer: Framer, data: bytes, sizes: list[int]) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out += framer.feed(data[pos:pos + n])
        pos += n
        i += 1
    return out


@pytest.mark.parametrize("sizes", [[1], [2], [3, 1], [7], [1000]])
def test_crlf_frames_whatever_the_chunking(sizes: list[int]) -> None:
    data = b"ST,GS,+  1.0 kg\r\nUS,GS,-2.5 kg\r\n\r\nST,GS,+3 kg\r\npartial"
    framer = Framer(FrameConfig(terminator="\r\n"))
    frames = feed_in_chunks(framer, data, sizes)
    assert frames == [b"ST,GS,+  1.0 kg", b"US,GS,-2.5 kg", b"ST,GS,+3 kg"]
    assert framer.buffered == len(b"partial")
    assert not framer.dropped  # a blank line is not bad input


def test_default_terminator_is_crlf_and_lf_alone_does_not_end_a_frame() -> None:
    framer = Framer(FrameConfig())
    assert framer.feed(b"a\nb\r\n") == [b"a\nb"]


def test_overlong_garbage_is_dropped_and_memory_stays_bounded() -> None:
    framer = Framer(FrameConfig(terminator="\r\n", max_length=32))
    rng = random.Random(5)
    peak = 0
    for _ in range(2000):
        # Noise that never contains LF, so never a terminator.
        chunk = bytes(rng.choice(b"abcdefgh \r0123") for _ in range(rng.randint(1, 300)))
        assert framer.feed(chunk) == []
        peak = max(peak, framer.buffered)
    assert peak <= 32
    assert framer.dropped["frame_too_long"] == 1  # one overlong frame, however long
    # Resynchronises on the next terminator: the tail of the garbage is dropped,
    # the frame after it is whole.
    assert framer.feed(b"tail of garbage\r\nGOOD\r\n") == [b"GOOD"]


def test_terminator_split_across_chunks_while_skipping_garbage() -> None:
    framer = Framer(FrameConfig(terminator="\r\n", max_length=4))
    assert framer.feed(b"0123456789\r") == []
    assert framer.feed(b"\nOK\r\n") == [b"OK"]
    assert framer.dropped["frame_too_long"] == 1


def test_stx_etx_with_noise_between_and_inside() -> None:
    framer = Framer(FrameConfig(start="\x02", terminator="\x03"))
    data = b"noise\x02 12.5\x03junk\x02broken\x02 13.0\x03\x03"
    frames = feed_in_chunks(framer, data, [3])
    assert frames == [b" 12.5", b" 13.0"]
    assert framer.dropped["noise"] >= 2


def test_noise_between_stx_frames_does_not_accumulate() -> None:
    framer = Framer(FrameConfig(start="\x02", terminator="\x03", max_length=16))
    for _ in range(1000):
        framer.feed(b"line noise without markers " * 3)
        assert framer.buffered == 0
    assert framer.feed(b"\x02ok\x03") == [b"ok"]


def test_overlong_stx_frame_resyncs_on_next_start() -> None:
    framer = Framer(FrameConfig(start="\x02", terminator="\x03", max_length=8))
    frames = framer.feed(b"\x02" + b"x" * 50) + framer.feed(b"\x03\x02fine\x03")
    assert frames == [b"fine"]
    assert framer.dropped["frame_too_long"] == 1


@pytest.mark.parametrize("sizes", [[1], [5], [100]])
def test_fixed_length_without_terminator(sizes: list[int]) -> None:
    framer = Framer(FrameConfig(length=4))
    assert feed_in_chunks(framer, b"AAAABBBBCCCCDD", sizes) == [b"AAAA", b"BBBB", b"CCCC"]
    assert framer.buffered == 2


@pytest.mark.parametrize("sizes", [[1], [4], [100]])
def test_fixed_length_after_start_marker_skips_noise(sizes: list[int]) -> None:
    framer = Framer(FrameConfig(start="\x02", length=3))
    frames = feed_in_chunks(framer, b"zz\x02abc\x02defq\x02gh", sizes)
    assert frames == [b"abc", b"def"]
    assert framer.dropped["noise"] >= 2
    assert framer.buffered <= 4


def test_fixed_length_with_terminator_checks_the_length() -> None:
    framer = Framer(FrameConfig(length=5, terminator="\r"))
    assert framer.feed(b"12345\r1234\r123456\rabcde\r") == [b"12345", b"abcde"]
    assert framer.dropped["wrong_length"] == 2


def test_multibyte_start_marker_split_across_chunks() -> None:
    framer = Framer(FrameConfig(start="<<", terminator=">>"))
    frames = framer.feed(b"garbage<") + framer.feed(b"<v=1>") + framer.feed(b">")
    assert frames == [b"v=1"]


def test_reset_forgets_a_partial_frame() -> None:
    framer = Framer(FrameConfig(terminator="\n"))
    framer.feed(b"old partial")
    framer.reset()
    assert framer.feed(b"new\n") == [b"new"]
