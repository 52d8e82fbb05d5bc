"""Accounts and permissions of the metadata plane (AccountService).

- `schema`: the `accounts` and `grants` tables (created by migration 0002);
- `store`: SQL reads and writes on them (`AccountStore`);
- `passwords`: bcrypt, off the event loop;
- `policy`: repository name patterns and the intersection of requested and granted scopes;
- `core`: the use cases (`AccountsCore`), including the bootstrap admin;
- `servicer`: protobuf <-> core, nothing else.
"""
