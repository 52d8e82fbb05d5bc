"""The `blobs` row checks the metadata store's write paths make inside their own transactions.

`BlobRowGuard` is used by `SqlMetadataStore` (services/metadata/store/sql.py): LinkBlob claims the
blob row (inserting it `active` when absent) and refuses a row that is not `active`; MountBlob
mounts only an `active` row. Both lock the row FOR SHARE (PostgreSQL; SQLite holds the write lock),
so the collector's FOR UPDATE + "still unlinked?" re-check and these calls are serialised. See the
package docstring for the whole protocol.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, select, update

from services.common.errors import ErrorKind, RegistryError
from services.metadata.gc.tables import blobs
from services.metadata.store.dialect import insert_ignore

ACTIVE = "active"
PENDING = "pending"
DELETING = "deleting"


def new_epoch() -> int:
    """A random positive 63-bit number identifying one incarnation of a `blobs` row."""
    return secrets.randbits(62) + 1


class VouchLapsed(Exception):
    """A vouched link (`claim_for_link(vouched_until=...)`) reached its transaction after its
    deadline: nothing was written, and the caller confirms the bytes the usual way."""


def blob_being_deleted(digest: str) -> RegistryError:
    return RegistryError(
        ErrorKind.BLOB_UNKNOWN,
        f"blob {digest} is being removed by garbage collection; upload it again",
        {"digest": digest, "reason": "deleting"},
    )


class BlobRowGuard:
    def __init__(self, dialect: str) -> None:
        self._insert = insert_ignore(dialect, blobs, ["digest"])
        # False under GuardedStore: a missing row means the GC removed it (bytes gone) after the
        # caller's confirmation, so it must not be re-created here.
        self.insert_missing = True
        self._activate = (update(blobs)
                          .where(blobs.c.digest == bindparam("b_digest"), blobs.c.epoch == bindparam("b_epoch"),
                                 blobs.c.state.in_([PENDING, ACTIVE]))
                          .values(state=ACTIVE, updated_at=bindparam("activated_at")))
        self._state = select(blobs.c.state).where(blobs.c.digest == bindparam("digest")).with_for_update(read=True)
        # A vouched link confirms whoever's `pending` claim is there (its epoch stays, so that
        # claimer's own activation still matches).
        self._confirm_pending = (update(blobs)
                                 .where(blobs.c.digest == bindparam("b_digest"), blobs.c.state == PENDING)
                                 .values(state=ACTIVE, updated_at=bindparam("activated_at")))

    def claim_for_link(self, conn: Connection, digest: str, size: int, *,
                       activate_epoch: int | None = None, vouched_until: float | None = None) -> None:
        """Makes sure `digest` has an `active` row before a link is written in this transaction.

        Inserts it `active` when absent and `insert_missing` (a bare store: the caller vouches for
        the bytes); under `GuardedStore` the row must already be `active` (it confirmed the bytes).
        Raises BLOB_UNKNOWN when the row is `deleting` or `pending` (a GC incarnation race).
        `activate_epoch`: the caller confirmed the bytes of the `pending` row of that epoch; it is
        made `active` here, in the link's transaction (one write instead of two). A row of another
        epoch, or `deleting`, means the GC took it meanwhile: BLOB_UNKNOWN.
        `vouched_until` (time.monotonic()): the caller's blob plane has just written the bytes and
        the orphan sweep cannot take them before then (GuardedStore), so an absent row is
        inserted `active` and a `pending` one made `active`; `deleting` is still BLOB_UNKNOWN.
        Past the deadline, VouchLapsed (nothing written)."""
        if vouched_until is not None:
            if time.monotonic() > vouched_until:
                raise VouchLapsed(digest)
            now = datetime.now(UTC)
            conn.execute(self._insert, {"digest": digest, "size": size, "state": ACTIVE, "epoch": new_epoch(),
                                        "updated_at": now})
            conn.execute(self._confirm_pending, {"b_digest": digest, "activated_at": now})
        elif activate_epoch is not None:
            activated = conn.execute(self._activate, {"b_digest": digest, "b_epoch": activate_epoch,
                                                      "activated_at": datetime.now(UTC)}).rowcount
            if activated:
                # The row of that epoch is `active` now, and the UPDATE holds it locked until
                # the transaction ends (stronger than the FOR SHARE below): nothing to re-read.
                return
        elif self.insert_missing:
            conn.execute(self._insert, {
                "digest": digest, "size": size, "state": ACTIVE, "epoch": new_epoch(),
                "updated_at": datetime.now(UTC),
            })
        state = conn.execute(self._state, {"digest": digest}).scalar()
        if state != ACTIVE:
            raise blob_being_deleted(digest)

    def usable(self, conn: Connection, digest: str) -> bool:
        """True when `digest` has an `active` row (locked FOR SHARE until the transaction ends)."""
        return conn.execute(self._state, {"digest": digest}).scalar() == ACTIVE
