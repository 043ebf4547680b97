"""Checksums: catalogue check values, and every layout accepted and refused."""

from __future__ import annotations

import pytest

from drivers.serial.checksum import compute, make_verifier
from drivers.serial.options import ChecksumConfig


@pytest.mark.parametrize(("kind", "check"), [
    ("crc16", 0xBB3D), ("crc16-modbus", 0x4B37),
    ("crc16-xmodem", 0x31C3), ("crc16-ccitt-false", 0x29B1),
])
def test_crc16_catalogue_check_values(kind: str, check: int) -> None:
    # "123456789" is the standard check input of the CRC catalogue.
    assert compute(kind, b"123456789") == check


def test_xor_sum_lrc() -> None:
    assert compute("xor", b"\x01\x02\x04") == 0x07
    assert compute("sum", b"\xff\x02") == 0x01
    assert compute("lrc", b"\x01\x02") == 0xFD


def test_nmea_good_bad_missing() -> None:
    verify = make_verifier(ChecksumConfig(type="nmea"))
    good = b"$GPGLL,4916.45,N,12311.12,W,225444,A*31"
    assert verify(good) == b"$GPGLL,4916.45,N,12311.12,W,225444,A"
    assert verify(good.replace(b"*31", b"*3a")) == "checksum_bad"
    assert verify(good.replace(b"4916", b"4917")) == "checksum_bad"
    assert verify(b"$GPGLL,4916.45,N") == "checksum_missing"
    assert verify(good + b"\r") == b"$GPGLL,4916.45,N,12311.12,W,225444,A"
    assert verify(good.replace(b"*31", b"*zz")) == "checksum_bad"
    assert verify(b"") == "checksum_missing"


def test_nmea_lowercase_hex_accepted() -> None:
    verify = make_verifier(ChecksumConfig(type="nmea"))
    body = b"WIXDR,C,21.4,C,AIRT"
    frame = b"$" + body + b"*" + f"{compute('xor', body):02x}".encode()
    assert verify(frame) == b"$" + body


def test_xor_hex_with_separator_and_skip() -> None:
    verify = make_verifier(ChecksumConfig(type="xor", separator=";", skip=1))
    body = b"W+00012.5"
    frame = b"@" + body + b";" + f"{compute('xor', body):02X}".encode()
    assert verify(frame) == b"@" + body
    assert verify(frame[:-1] + b"0" if frame[-1:] != b"0" else frame[:-1] + b"1") == "checksum_bad"
    assert verify(b"@" + body + f"{compute('xor', body):02X}".encode()) == "checksum_missing"


def test_crc16_modbus_binary_low_byte_first() -> None:
    verify = make_verifier(ChecksumConfig(type="crc16-modbus", format="binary"))
    data = b"123456789"
    assert verify(data + bytes([0x37, 0x4B])) == data
    assert verify(data + bytes([0x4B, 0x37])) == "checksum_bad"
    assert verify(b"1") == "checksum_missing"


def test_crc16_hex_four_digits() -> None:
    verify = make_verifier(ChecksumConfig(type="crc16"))
    assert verify(b"123456789BB3D") == b"123456789"
    assert verify(b"123456789bb3d") == b"123456789"
    assert verify(b"123456789BB3E") == "checksum_bad"


def test_sum_and_lrc_hex() -> None:
    sum_v = make_verifier(ChecksumConfig(type="sum"))
    lrc_v = make_verifier(ChecksumConfig(type="lrc"))
    assert sum_v(b"AB" + f"{(0x41 + 0x42) & 0xFF:02X}".encode()) == b"AB"
    assert lrc_v(b"AB" + f"{(-(0x41 + 0x42)) & 0xFF:02X}".encode()) == b"AB"
    assert lrc_v(b"AB83") == "checksum_bad"
