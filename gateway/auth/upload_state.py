"""Binds upload sessions to the account that started them, without touching the blob plane.

The session URL the gateway hands out carries `?_state=<mac>` (as CNCF Distribution's `_state`),
an HMAC-SHA256 over (upload id, repository, account). Clients echo the Location they were given,
so every PATCH/PUT/GET/DELETE on the session brings it back, and a session started by one account
cannot be continued by another: the MAC does not match, and the answer is 404 BLOB_UPLOAD_UNKNOWN
(the session is not revealed to exist). The key must be the same on every gateway replica:
`auth.upload_state_key`, or (when unset) derived from the token signing key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

STATE_PARAM = "_state"


def derive_key(material: bytes) -> bytes:
    return hmac.new(material, b"lading upload state v1", hashlib.sha256).digest()


class UploadStates:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, upload_id: str, repository: str, account: str) -> str:
        message = "\n".join((upload_id, repository, account)).encode()
        mac = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def derived_key(self, purpose: bytes) -> bytes:
        """A key for another of the gateway's MACs (e.g. the console's OIDC sign-in cookie): the
        same on every replica, like this one, and independent of it."""
        return hmac.new(self._key, purpose, hashlib.sha256).digest()

    def check(self, state: str | None, upload_id: str, repository: str, account: str) -> bool:
        if not state:
            return False
        return hmac.compare_digest(state.encode(), self.seal(upload_id, repository, account).encode())
