"""What a route needs, declared once per route and method in the route table (gateway.routes).

- OPEN: nothing (health probes, the token endpoint itself);
- LOGIN: valid credentials (token mode: any valid token, anonymous ones included);
- PULL / PUSH / DELETE: that action on the repository named in the path;
- UPLOAD: PUSH, and the upload session must belong to the caller (the signed `_state`);
- CATALOG: `registry:catalog:*` when `auth.require_catalog_scope`, else LOGIN (the listing is
  filtered to what the caller may pull either way).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str  # "open" | "login" | "repository" | "upload" | "catalog"
    action: str = ""

    @property
    def challenge_actions(self) -> str:
        """The actions a challenge asks for: pushing clients also need pull (as Distribution asks)."""
        return "pull,push" if self.action == "push" else self.action


OPEN = Rule("open")
LOGIN = Rule("login")
PULL = Rule("repository", "pull")
PUSH = Rule("repository", "push")
DELETE = Rule("repository", "delete")
UPLOAD = Rule("upload", "push")
CATALOG = Rule("catalog")
