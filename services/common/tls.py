"""gRPC credentials between planes, from `GrpcTlsSettings`: server side and channel side.

Both read PEM files once, when a server or channel is built (start-up, before serving), and fail
with `TlsConfigError` naming the setting when a required file is missing or unreadable, so a
misconfigured plane stops at start instead of refusing every call.

Server: `cert_file` + `key_file` (required); with `require_client_cert`, mutual TLS: every
client must present a certificate signed by a CA in `ca_file` (required then), whose names then
identify it (services/common/access.py). Without it, gRPC asks clients for no certificate at all
(`ca_file` is unused), so callers identify by bearer token.

Channel: `ca_file` verifies the server (None: gRPC's default roots); `cert_file` + `key_file`
(both or neither) are the client certificate for mutual TLS; `server_name_override` replaces the
host name checked against the server's certificate (needed for `unix:` targets, whose authority
is "localhost", and for addresses that are not in the certificate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from services.common.settings import GrpcTlsSettings


class TlsConfigError(ValueError):
    """TLS settings that cannot work (the message names the setting and the file)."""


def _read(path: Path | None, setting: str) -> bytes:
    if path is None:
        raise TlsConfigError(f"TLS is enabled but `{setting}` is not set")
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TlsConfigError(f"`{setting}` = {path}: {error.strerror or error}") from None


def _read_optional(path: Path | None, setting: str) -> bytes | None:
    return None if path is None else _read(path, setting)


def server_credentials(tls: GrpcTlsSettings, *, section: str = "tls") -> grpc.ServerCredentials:
    """Credentials for a plane's listener. Raises TlsConfigError (see the module docstring).

    `section` prefixes setting names in error messages (e.g. "blob.tls").
    """
    key = _read(tls.key_file, f"{section}.key_file")
    chain = _read(tls.cert_file, f"{section}.cert_file")
    if tls.require_client_cert and tls.ca_file is None:
        raise TlsConfigError(f"`{section}.require_client_cert` needs `{section}.ca_file` (the clients' CA)")
    client_ca = _read_optional(tls.ca_file, f"{section}.ca_file")
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=tls.require_client_cert,
    )


def channel_credentials(tls: GrpcTlsSettings, *, section: str = "tls") -> grpc.ChannelCredentials:
    """Credentials for a channel to a plane. Raises TlsConfigError (see the module docstring)."""
    if (tls.cert_file is None) != (tls.key_file is None):
        raise TlsConfigError(f"`{section}.cert_file` and `{section}.key_file` go together (mutual TLS)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_optional(tls.ca_file, f"{section}.ca_file"),
        private_key=_read_optional(tls.key_file, f"{section}.key_file"),
        certificate_chain=_read_optional(tls.cert_file, f"{section}.cert_file"),
    )


def channel_options(tls: GrpcTlsSettings) -> list[tuple[str, Any]]:
    """Extra channel options TLS needs: the name checked against the server's certificate."""
    if tls.enabled and tls.server_name_override:
        return [("grpc.ssl_target_name_override", tls.server_name_override)]
    return []
