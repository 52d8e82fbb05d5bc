"""The change feed of the metadata plane (ChangeService.WatchChanges).

- `tables`: the `changes` table (migration 0005);
- `log`: `ChangeLog`, appends changes inside the writer's transaction and reads them by position;
- `hub`: `ChangeHub`, one per process: the newest position, woken by this process's commits,
  PostgreSQL NOTIFY from any replica and a poll; prunes expired changes;
- `servicer`: the server-streaming call gateways subscribe to;
- `wiring`: builds the pieces for services/metadata/main.py.
"""
