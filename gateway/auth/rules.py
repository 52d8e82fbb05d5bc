"""What a route needs, declared once per route and method in the route table (gateway.routes).

- OPEN: nothing (health probes, the token endpoint itself);
- LOGIN: valid credentials (token mode: any valid token, anonymous ones included);
- PULL / PUSH / DELETE: that action on the repository named in the path;
- UPLOAD: PUSH, and the upload session must belong to the caller (the signed `_state`);
- UPLOAD_STATUS / UPLOAD_CANCEL: as UPLOAD, but a token with only the action CNCF Distribution
  asks for that method (GET: pull, DELETE: delete) is enough too. Clients that keep one token per
  repository and HTTP method (the OCI conformance suite, regclient) query a session with their
  pull token and cancel it with their delete token; the session stays bound to its account, so
  the lesser action only ever reaches the caller's own session.
- CATALOG: `registry:catalog:*` when `auth.require_catalog_scope`, else LOGIN (the listing is
  filtered to what the caller may pull either way).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str  # "open" | "login" | "repository" | "upload" | "catalog"
    action: str = ""
    # Other actions that are each enough on their own (the challenge still asks for `action`).
    alternatives: tuple[str, ...] = ()

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
UPLOAD_STATUS = Rule("upload", "push", alternatives=("pull",))
UPLOAD_CANCEL = Rule("upload", "push", alternatives=("delete",))
CATALOG = Rule("catalog")
