"""The metadata plane's own channel to the blob plane (`gc.blob_target`: the first-link byte
check and the collector) speaks TLS with `gc.blob_tls` when the blob plane requires it."""

from __future__ import annotations

import hashlib

import pytest

from services.common.errors import ErrorKind, RegistryError
from services.common.settings import GcSettings, GrpcTlsSettings, Settings
from services.metadata.gc.wiring import blob_channel, blob_plane_checker
from tests.tls.test_grpc_tls import Certs, Planes, certs, client_tls, planes  # noqa: F401 - fixtures

ABSENT = "sha256:" + hashlib.sha256(b"never stored anywhere").hexdigest()


def settings_with(target: str, tls: GrpcTlsSettings) -> Settings:
    return Settings(gc=GcSettings(blob_target=target, blob_tls=tls))


async def test_checker_reaches_a_mutual_tls_blob_plane(planes: Planes, certs: Certs) -> None:  # noqa: F811
    channel = blob_channel(settings_with(planes.blob_target, client_tls(
        certs, cert_file=certs.metadata_client.cert, key_file=certs.metadata_client.key)))
    async with channel:
        # An answer from the plane itself: the bytes are not there (not "plane unreachable").
        assert await blob_plane_checker(channel)(ABSENT) is False


async def test_plaintext_channel_is_refused_and_reported_unavailable(planes: Planes, certs: Certs) -> None:  # noqa: F811
    channel = blob_channel(settings_with(planes.blob_target, GrpcTlsSettings()))
    async with channel:
        with pytest.raises(RegistryError) as caught:
            await blob_plane_checker(channel)(ABSENT)
    assert caught.value.kind is ErrorKind.UNAVAILABLE


def test_missing_certificate_file_names_the_setting(certs: Certs, planes: Planes) -> None:  # noqa: F811
    tls = client_tls(certs, cert_file=certs.ca.cert.parent / "missing.pem")
    with pytest.raises(Exception, match=r"gc\.blob_tls\.cert_file"):
        blob_channel(settings_with(planes.blob_target, tls))
