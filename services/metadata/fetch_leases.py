"""Single-flight leases of fetch on miss (table `proxy_fetch_leases`, migration 0008_proxy): one
holder per key across every metadata replica, lapsing after a lifetime when its holder died. A
live holder renews its lease while it works (services/common/lease_keeper.py), so the lifetime
is short (waiters take over soon after a holder died) and still bounds no fetch.

Keys: a blob's digest (the pull-through cache's fetch from an upstream), "mirror:…" (a mirror
run), "region:<region>:<digest>" (a region's fetch of a blob from another region,
services/metadata/region_fetch.py). The rows live in the primary database.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, select, update

from services.common.lease_keeper import LeaseKeeper
from services.metadata.proxy.tables import proxy_fetch_leases
from services.metadata.store.access import Kind
from services.metadata.store.dialect import insert_ignore
from services.metadata.store.engine import Database


class FetchLeases:
    def __init__(self, database: Database, lifetime_seconds: float) -> None:
        self._database = database
        self.lifetime_seconds = lifetime_seconds
        self._lifetime = timedelta(seconds=lifetime_seconds)
        self._insert = insert_ignore(database.dialect, proxy_fetch_leases, ["digest"])

    async def take(self, key: str) -> str | None:
        """A new lease on `key`, or None while another holder's lease runs."""
        lease_id = uuid.uuid4().hex
        lifetime = self._lifetime
        insert = self._insert

        def work(conn: Connection) -> str | None:
            now = datetime.now(UTC)
            values = {"digest": key, "lease_id": lease_id, "expires_at": now + lifetime}
            if conn.execute(insert, values).rowcount == 1:
                return lease_id
            lapsed = (update(proxy_fetch_leases)
                      .where(proxy_fetch_leases.c.digest == key, proxy_fetch_leases.c.expires_at < now)
                      .values(lease_id=lease_id, expires_at=now + lifetime))
            return lease_id if conn.execute(lapsed).rowcount == 1 else None

        return await self._database.access.write(work)

    async def renew(self, key: str, lease_id: str) -> bool:
        """Extends the holder's lease on `key` by a lifetime from now; False when it is no longer
        the holder's (taken over after it lapsed, or released). A lapsed lease nobody took over is
        still the holder's: renewing it is safe, no one else fetches."""
        lifetime = self._lifetime
        statement = (update(proxy_fetch_leases)
                     .where(proxy_fetch_leases.c.digest == key, proxy_fetch_leases.c.lease_id == lease_id))

        def work(conn: Connection) -> bool:
            return conn.execute(statement.values(expires_at=datetime.now(UTC) + lifetime)).rowcount == 1

        return await self._database.access.write(work)

    def keeper(self, key: str, lease_id: str, *, limit_seconds: float | None = None) -> LeaseKeeper:
        """Renews the lease while in use (`async with`) — for holders in this process (mirror runs)."""
        return LeaseKeeper(lambda: self.renew(key, lease_id), self.lifetime_seconds, describe=key,
                           limit_seconds=limit_seconds)

    async def running(self, key: str) -> bool:
        """True while a holder's lease on `key` has not lapsed (waiters ask before taking over)."""
        statement = select(proxy_fetch_leases.c.expires_at).where(proxy_fetch_leases.c.digest == key)
        async with self._database.access.connection(Kind.PRIMARY_READ) as conn:
            expires = (await conn.execute(statement)).scalar()
        if expires is None:
            return False
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        return expires >= datetime.now(UTC)

    async def release(self, key: str, lease_id: str) -> None:
        release = delete(proxy_fetch_leases).where(proxy_fetch_leases.c.digest == key,
                                                   proxy_fetch_leases.c.lease_id == lease_id)
        await self._database.access.write(lambda conn: conn.execute(release))
