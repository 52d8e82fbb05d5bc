"""Bearer tokens for planes on TCP in tests: one random token file per role, and the LADING_*
variables that make the planes accept them (`grpc_access.<role>.token_file`) and the callers
present them (`gateway.grpc.token_file`, `gc.blob_token_file`, `operator.token_file`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

ROLES = ("gateway", "operator", "metadata")


@dataclass(frozen=True)
class RoleTokens:
    folder: Path

    def path(self, role: str) -> Path:
        return self.folder / f"{role}.token"

    def token(self, role: str) -> str:
        return self.path(role).read_text().strip()

    def plane_env(self) -> dict[str, str]:
        """What a plane needs to know every role's token."""
        return {f"LADING_GRPC_ACCESS__{role.upper()}__TOKEN_FILE": str(self.path(role)) for role in ROLES}

    def gateway_env(self) -> dict[str, str]:
        return {"LADING_GATEWAY__GRPC__TOKEN_FILE": str(self.path("gateway"))}

    def metadata_env(self) -> dict[str, str]:
        """The metadata plane: the planes' side, and its own token for the blob plane."""
        return {**self.plane_env(), "LADING_GC__BLOB_TOKEN_FILE": str(self.path("metadata"))}

    def operator_env(self) -> dict[str, str]:
        return {"LADING_OPERATOR__TOKEN_FILE": str(self.path("operator"))}


def write_role_tokens(folder: Path) -> RoleTokens:
    """A fresh random token per role in `folder` (files 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = RoleTokens(folder)
    for role in ROLES:
        path = tokens.path(role)
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return tokens
