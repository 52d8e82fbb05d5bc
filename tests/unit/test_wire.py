"""Hand-encoded protobuf frames of the blob byte streams are byte-identical to the generated code,
and the hand decoders take only what they can decode exactly."""

from __future__ import annotations

import pytest
from lading.blob.v1 import blob_pb2

from services.blob.servicer import decode_append_request
from services.common.wire import bytes_field_header, encode_bytes_field, encode_bytes_field_pieces


@pytest.mark.parametrize("size", [1, 127, 128, 16_383, 16_384, 1 << 20, (1 << 20) + 17])
def test_pieces_are_framed_like_the_generated_code(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    header = blob_pb2.AppendUploadRequest(upload_id="u" * 32, repository="a/b", expected_offset=7).SerializeToString()
    cut = size // 3
    pieces: list[bytes | memoryview] = [data[:cut], memoryview(data)[cut:]]
    expected = blob_pb2.AppendUploadRequest(
        upload_id="u" * 32, repository="a/b", expected_offset=7, data=data
    ).SerializeToString()
    assert encode_bytes_field_pieces(header, 4, pieces) == expected
    assert encode_bytes_field(4, data) == blob_pb2.AppendUploadRequest(data=data).SerializeToString()
    assert len(bytes_field_header(4, size)) == len(encode_bytes_field(4, data)) - size


def test_an_empty_field_decodes_like_an_absent_one() -> None:
    # proto3 leaves an empty `data` out; the hand-written frame keeps it: both parse the same.
    assert blob_pb2.AppendUploadRequest.FromString(encode_bytes_field(4, b"")) == blob_pb2.AppendUploadRequest()


def test_data_only_append_messages_decode_to_their_bytes() -> None:
    data = b"\x01\x02" * 100_000
    assert decode_append_request(encode_bytes_field(4, data)) == data
    assert isinstance(decode_append_request(encode_bytes_field(4, b"x")), bytes)


@pytest.mark.parametrize(
    "message",
    [
        blob_pb2.AppendUploadRequest(upload_id="abc", repository="r", expected_offset=3, data=b"payload"),
        blob_pb2.AppendUploadRequest(upload_id="abc"),
        blob_pb2.AppendUploadRequest(),
    ],
)
def test_other_append_messages_are_parsed(message: blob_pb2.AppendUploadRequest) -> None:
    decoded = decode_append_request(message.SerializeToString())
    assert isinstance(decoded, blob_pb2.AppendUploadRequest) and decoded == message


def test_data_followed_by_another_field_is_parsed_not_truncated() -> None:
    raw = encode_bytes_field(4, b"data") + blob_pb2.AppendUploadRequest(upload_id="late").SerializeToString()
    decoded = decode_append_request(raw)
    assert isinstance(decoded, blob_pb2.AppendUploadRequest)
    assert (decoded.data, decoded.upload_id) == (b"data", "late")
