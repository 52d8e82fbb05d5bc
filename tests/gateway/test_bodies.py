"""Regrouping request bodies into bounded gRPC messages, with exact-length checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.bodies import in_message_pieces, in_messages
from services.common.errors import ErrorKind, RegistryError


async def pieces(*sizes: int) -> AsyncIterator[bytes]:
    for index, size in enumerate(sizes):
        yield bytes([index % 256]) * size


async def collect(source: AsyncIterator[bytes]) -> list[bytes]:
    return [message async for message in source]


@pytest.mark.parametrize(
    ("sizes", "limit"),
    [
        ((10, 10, 10), 16),
        ((1, 2, 3, 4), 100),
        ((100,), 7),
        ((7, 7), 7),
        ((0, 5, 0), 2),
        ((65536,) * 20, 1 << 20),
    ],
)
async def test_messages_are_bounded_and_lossless(sizes: tuple[int, ...], limit: int) -> None:
    original = b"".join([bytes([i % 256]) * s for i, s in enumerate(sizes)])
    messages = await collect(in_messages(pieces(*sizes), limit))
    assert b"".join(messages) == original
    assert all(0 < len(m) <= limit for m in messages)
    # every message but the last is full: few, large messages for the blob plane
    assert all(len(m) == limit for m in messages[:-1])


async def test_exact_length_accepts_the_declared_size() -> None:
    assert b"".join(await collect(in_messages(pieces(3, 4), 5, exact_length=7))) == b"\0" * 3 + b"\1" * 4


@pytest.mark.parametrize("sizes", [(3, 5), (2,)])
async def test_exact_length_refuses_other_sizes(sizes: tuple[int, ...]) -> None:
    with pytest.raises(RegistryError) as caught:
        await collect(in_messages(pieces(*sizes), 4, exact_length=7))
    assert caught.value.kind is ErrorKind.SIZE_INVALID


@pytest.mark.parametrize(
    ("sizes", "limit"),
    [((10, 10, 10), 16), ((5, 0), 5), ((0,), 3), ((100,), 7), ((65536,) * 20, 1 << 20), ((3, 300_000, 5), 65536)],
)
async def test_message_pieces_regroup_without_copying(sizes: tuple[int, ...], limit: int) -> None:
    """`in_message_pieces` gives each message as the pieces (or views of them) it is made of, so
    the gRPC framing can join them in one copy; the grouping is the one `in_messages` joins."""
    original = b"".join([bytes([i % 256]) * s for i, s in enumerate(sizes)])
    groups = [group async for group in in_message_pieces(pieces(*sizes), limit)]
    assert [b"".join(group) for group in groups] == await collect(in_messages(pieces(*sizes), limit))
    assert b"".join(b"".join(group) for group in groups) == original
    assert all(piece and isinstance(piece, (bytes, memoryview)) for group in groups for piece in group)
    assert all(sum(map(len, group)) == limit for group in groups[:-1])
