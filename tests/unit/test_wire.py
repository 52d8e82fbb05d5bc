"""Hand-encoded protobuf frames of the blob byte streams are byte-identical to the generated code,
the hand decoders take only what they can decode exactly, and every field number they use comes
from the generated descriptors (issue 13, Part 1 item 6)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from lading.blob.v1 import blob_pb2

import gateway.clients
import services.blob.servicer
from services.blob.servicer import decode_append_request
from services.common.wire import (
    bytes_field_header,
    bytes_field_number,
    encode_bytes_field,
    encode_bytes_field_pieces,
)

REPO = Path(__file__).resolve().parents[2]
# The data-only messages of the blob byte streams, by their generated descriptors.
APPEND_DATA = blob_pb2.AppendUploadRequest.DESCRIPTOR.fields_by_name["data"].number
READ_DATA = blob_pb2.ReadBlobResponse.DESCRIPTOR.fields_by_name["data"].number


@pytest.mark.parametrize("size", [1, 127, 128, 16_383, 16_384, 1 << 20, (1 << 20) + 17])
def test_pieces_are_framed_like_the_generated_code(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    header = blob_pb2.AppendUploadRequest(upload_id="u" * 32, repository="a/b", expected_offset=7).SerializeToString()
    cut = size // 3
    pieces: list[bytes | memoryview] = [data[:cut], memoryview(data)[cut:]]
    expected = blob_pb2.AppendUploadRequest(
        upload_id="u" * 32, repository="a/b", expected_offset=7, data=data
    ).SerializeToString()
    assert encode_bytes_field_pieces(header, APPEND_DATA, pieces) == expected
    assert encode_bytes_field(APPEND_DATA, data) == blob_pb2.AppendUploadRequest(data=data).SerializeToString()
    assert len(bytes_field_header(APPEND_DATA, size)) == len(encode_bytes_field(APPEND_DATA, data)) - size


def test_an_empty_field_decodes_like_an_absent_one() -> None:
    # proto3 leaves an empty `data` out; the hand-written frame keeps it: both parse the same.
    assert blob_pb2.AppendUploadRequest.FromString(encode_bytes_field(APPEND_DATA, b"")) == blob_pb2.AppendUploadRequest()


def test_data_only_append_messages_decode_to_their_bytes() -> None:
    data = b"\x01\x02" * 100_000
    assert decode_append_request(encode_bytes_field(APPEND_DATA, data)) == data
    assert isinstance(decode_append_request(encode_bytes_field(APPEND_DATA, b"x")), bytes)


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
    raw = encode_bytes_field(APPEND_DATA, b"data") + blob_pb2.AppendUploadRequest(upload_id="late").SerializeToString()
    decoded = decode_append_request(raw)
    assert isinstance(decoded, blob_pb2.AppendUploadRequest)
    assert (decoded.data, decoded.upload_id) == (b"data", "late")


def test_both_ends_frame_the_fields_the_descriptors_name() -> None:
    assert gateway.clients._APPEND_DATA_FIELD == services.blob.servicer._APPEND_DATA_FIELD == APPEND_DATA
    assert gateway.clients._READ_DATA_FIELD == services.blob.servicer._READ_DATA_FIELD == READ_DATA
    # The gateway's reader takes the data of a frame the blob plane wrote, and nothing else.
    frame = encode_bytes_field(services.blob.servicer._READ_DATA_FIELD, b"chunk")
    assert bytes(gateway.clients._decode_read_response(frame)) == b"chunk"
    assert blob_pb2.ReadBlobResponse.FromString(frame).data == b"chunk"
    redirect = blob_pb2.ReadBlobResponse(redirect_url="http://x/").SerializeToString()
    assert gateway.clients._decode_read_response(redirect).redirect_url == "http://x/"


def test_only_singular_bytes_fields_can_be_framed_by_hand() -> None:
    assert bytes_field_number(blob_pb2.CommitUploadRequest, "final_data") == (
        blob_pb2.CommitUploadRequest.DESCRIPTOR.fields_by_name["final_data"].number)
    for message, name in ((blob_pb2.AppendUploadRequest, "upload_id"), (blob_pb2.AppendUploadRequest, "nope")):
        with pytest.raises(ValueError, match="not a singular bytes field"):
            bytes_field_number(message, name)


@pytest.mark.parametrize("module", ["gateway/clients.py", "services/blob/servicer.py", "services/common/wire.py"])
def test_no_field_number_is_copied_by_hand(module: str) -> None:
    """A constant naming a protobuf field (`..._FIELD`) must be read from a descriptor: a literal
    stays silently wrong when the .proto renumbers the field."""
    tree = ast.parse((REPO / module).read_text())
    literals = [
        target.id
        for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id.upper().endswith("_FIELD")
        and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int)
    ]
    assert literals == [], f"{module}: field numbers written by hand: {literals}"
