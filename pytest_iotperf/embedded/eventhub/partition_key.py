"""Partition-key routing: Bob Jenkins' lookup3 ``hashlittle2``, as Event Hubs uses it.

The service hashes the UTF-8 bytes of the key, folds the two 32-bit results
into a signed 16-bit hash code, and picks ``abs(code % partitions)`` with the
remainder truncated toward zero (C# semantics).
"""

from __future__ import annotations

__all__ = ["hash_code", "partition_for_key"]

_MASK = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = ((a - c) & _MASK) ^ _rot(c, 4)
    c = (c + b) & _MASK
    b = ((b - a) & _MASK) ^ _rot(a, 6)
    a = (a + c) & _MASK
    c = ((c - b) & _MASK) ^ _rot(b, 8)
    b = (b + a) & _MASK
    a = ((a - c) & _MASK) ^ _rot(c, 16)
    c = (c + b) & _MASK
    b = ((b - a) & _MASK) ^ _rot(a, 19)
    a = (a + c) & _MASK
    c = ((c - b) & _MASK) ^ _rot(b, 4)
    b = (b + a) & _MASK
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    c = ((c ^ b) - _rot(b, 14)) & _MASK
    a = ((a ^ c) - _rot(c, 11)) & _MASK
    b = ((b ^ a) - _rot(a, 25)) & _MASK
    c = ((c ^ b) - _rot(b, 16)) & _MASK
    a = ((a ^ c) - _rot(c, 4)) & _MASK
    b = ((b ^ a) - _rot(a, 14)) & _MASK
    c = ((c ^ b) - _rot(b, 24)) & _MASK
    return a, b, c


def _word(data: bytes, start: int) -> int:
    # Little-endian, zero-padded: lookup3 reads a short tail as if the missing bytes were zero.
    return int.from_bytes(data[start : start + 4], "little")


def hashlittle2(data: bytes, pc: int = 0, pb: int = 0) -> tuple[int, int]:
    """Return lookup3's two 32-bit hashes ``(c, b)`` of ``data``."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + pc) & _MASK
    c = (c + pb) & _MASK
    pos = 0
    while length - pos > 12:
        a = (a + _word(data, pos)) & _MASK
        b = (b + _word(data, pos + 4)) & _MASK
        c = (c + _word(data, pos + 8)) & _MASK
        a, b, c = _mix(a, b, c)
        pos += 12
    remaining = length - pos
    if remaining == 0:
        return c, b
    tail = data[pos:] + b"\x00" * (12 - remaining)
    a = (a + _word(tail, 0)) & _MASK
    b = (b + _word(tail, 4)) & _MASK
    c = (c + _word(tail, 8)) & _MASK
    a, b, c = _final(a, b, c)
    return c, b


def hash_code(key: str) -> int:
    """Return the signed 16-bit Event Hubs hash code of ``key`` (0 for an empty key)."""
    if not key:
        return 0
    c, b = hashlittle2(key.encode("utf-8"))
    value = (c ^ b) & 0xFFFF
    return value - 0x10000 if value >= 0x8000 else value


def partition_for_key(key: str, partitions: int) -> int:
    """Return the index of the partition that events with partition key ``key`` are stored in."""
    code = hash_code(key)
    # C# remainder truncates toward zero; Python's % floors, which differs for negative codes.
    remainder = abs(code) % partitions
    return remainder
