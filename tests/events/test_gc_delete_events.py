"""Delete events of the collector and the admin repository delete, store-level on SQLite and
PostgreSQL: written in the deleting transaction (rolled back with it), none for a skipped deletion,
and marked with the `lading-gc` / `lading-admin` actor."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import event, select

from services.metadata.gc import sweep
from services.metadata.gc.store import GcStore
from services.metadata.store.engine import Database
from tests.events.receiver import Receiver
from tests.events.test_outbox import build, endpoint, outbox_rows, push_image
from tests.support import oci


def gc_over(db: Database, outbox: Any) -> GcStore:
    return GcStore(db, delay_seconds=0, maintenance_cache_seconds=0.0, events=outbox)


async def bodies(db: Database) -> list[dict[str, Any]]:
    from services.metadata.events.tables import event_outbox

    async with db.writes.connect() as conn:
        rows = (await conn.execute(select(event_outbox.c.body).order_by(event_outbox.c.id))).scalars()
        return [json.loads(body) for body in rows]


async def test_the_collector_writes_one_delete_event_per_manifest_it_deletes(database: Database,
                                                                            receiver: Receiver) -> None:
    core, outbox, _, _ = build(database, endpoint(receiver))
    gc = gc_over(database, outbox)
    untagged, tagged = oci.image(layers=1), oci.image(layers=1)
    await push_image(core, "gc/app", "old", untagged)
    await push_image(core, "gc/app", "v1", tagged)
    await core.delete_manifest("gc/app", "old")
    before = await outbox_rows(database)

    deleted, _ = await sweep.sweep(gc, delete_untagged=True)

    assert deleted == 1
    new = (await bodies(database))[before:]
    assert [e["target"] for e in new] == [{"digest": untagged.digest, "repository": "gc/app"}]
    assert new[0]["action"] == "delete" and new[0]["actor"] == {"name": "lading-gc"}
    assert new[0]["request"]["useragent"] == "lading-gc" and new[0]["request"]["host"] == ""
    # The tagged manifest was looked at and kept: no event for it, then or on a second run.
    assert await sweep.sweep(gc, delete_untagged=True) == (0, 0)
    assert await outbox_rows(database) == before + 1


async def test_a_repository_delete_writes_its_events_or_nothing(database: Database, receiver: Receiver) -> None:
    core, outbox, _, _ = build(database, endpoint(receiver))
    gc = gc_over(database, outbox)
    first, second = oci.image(layers=1), oci.image(layers=1)
    await push_image(core, "gone/app", "v1", first)
    await push_image(core, "gone/app", "v2", second)
    before = await outbox_rows(database)

    # The transaction fails at its last statement, after the events were written: they go too.
    def fail_on_repository_delete(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM REPOSITORIES"):
            raise RuntimeError("injected failure")

    event.listen(database.write_engine, "before_cursor_execute", fail_on_repository_delete)
    try:
        with pytest.raises(Exception, match="injected failure"):
            await gc.delete_repository("gone/app")
    finally:
        event.remove(database.write_engine, "before_cursor_execute", fail_on_repository_delete)
    assert await outbox_rows(database) == before
    assert (await core.get_manifest("gone/app", "v1")).digest == first.digest

    assert await gc.delete_repository("gone/app") == (2, 4)
    new = (await bodies(database))[before:]
    assert {e["target"].get("digest") for e in new[:2]} == {first.digest, second.digest}
    assert all(e["target"]["repository"] == "gone/app" and set(e["target"]) == {"digest", "repository"}
               for e in new[:2])
    assert new[2]["target"] == {"repository": "gone/app"}
    assert len(new) == 3 and all(e["action"] == "delete" and e["actor"] == {"name": "lading-admin"} for e in new)
    assert len({e["request"]["id"] for e in new}) == 1


async def test_no_endpoints_no_rows(database: Database) -> None:
    core, outbox, _, _ = build(database)
    await push_image(core, "quiet/app", "v1", oci.image(layers=1))
    await core.delete_manifest("quiet/app", "v1")
    assert await sweep.sweep(gc_over(database, outbox), delete_untagged=True) == (1, 2)
    await push_image(core, "quiet/app", "v2", oci.image(layers=1))
    await gc_over(database, outbox).delete_repository("quiet/app")
    assert await outbox_rows(database) == 0
