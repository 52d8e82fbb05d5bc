"""`python -m services.metadata.migrations`: upgrades the database whose URL is the first line of
stdin to head, then exits (0, or 1 with the error on stderr). The metadata plane runs this as a
child (`migrate_in_child`) so that Alembic never stays resident in the plane."""

from __future__ import annotations

import asyncio
import sys

from services.metadata.migrations import migrate


def main() -> int:
    url = sys.stdin.readline().strip()
    if not url:
        print("expected the database URL on stdin", file=sys.stderr)
        return 2
    try:
        asyncio.run(migrate(url))
    except Exception as exc:  # noqa: BLE001 - reported to the parent on stderr
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
