"""Hand-encoded protobuf messages for the blob byte streams, shared by both ends.

A fresh upb message around 1 MiB, serialised, costs ~1.4 ms per MiB here (its arena blocks are
returned to the kernel and faulted in again every time); writing the wire form directly costs
~0.1 ms. The wire format is exactly what the generated code would produce, so either end may
still use the generated classes. Field numbers come from the generated descriptors
(`bytes_field_number`), never copied by hand, so a renumbered field cannot go unnoticed.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor


def bytes_field_number(message: Any, name: str) -> int:
    """The number of the `bytes` field `name` of a generated message class, read from its
    descriptor. Raises ValueError when the field is missing or is not a singular `bytes` field
    (the helpers below frame length-delimited bytes only)."""
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None or field.type != FieldDescriptor.TYPE_BYTES or field.is_repeated:
        raise ValueError(f"{message.DESCRIPTOR.full_name}.{name} is not a singular bytes field")
    return field.number


def bytes_field_header(number: int, size: int) -> bytes:
    """The tag and length that precede `size` bytes of a length-delimited field."""
    header = bytearray([number << 3 | 2])
    while size > 0x7F:
        header.append(size & 0x7F | 0x80)
        size >>= 7
    header.append(size)
    return bytes(header)


def encode_bytes_field(number: int, data: bytes | bytearray | memoryview) -> bytes:
    """The protobuf wire form of one length-delimited field, with one copy of `data`: a complete
    message when it is the message's only field (messages may be concatenated field by field)."""
    return b"".join((bytes_field_header(number, len(data)), data))


def encode_bytes_field_pieces(prefix: bytes, number: int, pieces: list[bytes | memoryview]) -> bytes:
    """`prefix` (other fields, already encoded) then the field `number` holding the concatenated
    `pieces`, in ONE copy of their bytes (joining the pieces first would copy them twice)."""
    size = sum(len(piece) for piece in pieces)
    return b"".join([prefix, bytes_field_header(number, size), *pieces])


def only_bytes_field(raw: bytes, number: int) -> int | None:
    """When `raw` is a message holding nothing but the length-delimited field `number`, the
    offset where that field's bytes start (they run to the end of `raw`); otherwise None, and the
    caller parses it with the generated class. Lets a byte stream skip protobuf's parse copies."""
    if len(raw) < 2 or raw[0] != (number << 3 | 2):
        return None
    length = shift = 0
    position = 1
    while position < len(raw) and position <= 10:
        byte = raw[position]
        position += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return position if position + length == len(raw) else None
    return None


def already_encoded(message: bytes) -> bytes:
    """A gRPC (de)serializer for messages that are already in wire form."""
    return message
