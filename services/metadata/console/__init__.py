"""The web console's side of the metadata plane (ConsoleService; the pages are gateway/console).

- `tables`: `console_sessions` (created by migration 0007);
- `sessions`: sessions by the hash of their secret, with absolute and idle expiry;
- `reads`: the console's listings, paginated and filtered in SQL (search, tags with details,
  manifest details, referrer trees, storage per repository);
- `core`: who a session is (`Actor`) and what it may do, the same checks as the registry API;
- `servicer`: protobuf <-> core; the Admin* calls reuse the operator servicers after an admin check.
"""
