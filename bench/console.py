"""`python -m bench.console`: how long the console's pages take on a big registry (issue 17 item 9).

Builds a metadata database with `--repositories` (10,000) repositories and `--tags` (100,000)
tags in all (one repository, `big/app`, holds `--big-tags` of them: 10,000; each tag on its own
small manifest with one linked blob), written with bulk INSERTs straight into a migrated database
(seeding, not the code under test: pushing 100,000 manifests through the API would take most of
an hour), then starts `lading serve` on it in token mode and signs in to the console twice: as
the admin, and as a user whose grants match one repository in ten (`team-0*` ... patterns), whose
pages therefore filter in SQL. Each page is fetched `--rounds` (20) times per account, after one
warm-up; it prints one Markdown table with p50 / p95 / max per page and account, and exits 1
when a p95 is over `--budget-ms` (300).

`--database-url postgresql+asyncpg://...` seeds and serves a PostgreSQL database instead of the
SQLite file (the database must exist and be empty).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import insert

from gateway.auth.keys import generate_signing_key_pem
from services.common.settings import MetadataSettings
from services.metadata.gc.tables import blobs
from services.metadata.migrations import migrate
from services.metadata.store.engine import open_database
from services.metadata.store.schema import manifests, repositories, repository_blobs, tags
from tests.support.stack import REPO_ROOT, LadingProcess, free_port, lading_command

ADMIN = ("admin", "bench-admin-password")
USER = ("viewer", "bench-viewer-password")
BIG = "big/app"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_BATCH = 5000


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _names(count: int) -> list[str]:
    """`team-<n % 100>/app-<n>`: one hundred teams, sorted names spread across them."""
    return [f"team-{n % 100:02d}/app-{n:05d}" for n in range(count - 1)] + [BIG]


async def seed(url: str, *, repository_count: int, tag_count: int, big_tags: int) -> None:
    database = open_database(MetadataSettings(database_url=url))
    try:
        await migrate(database)
        now = datetime.now(UTC)
        names = _names(repository_count)
        per_repository = max(1, (tag_count - big_tags) // max(1, repository_count - 1))
        async with database.writes.begin() as conn:
            await conn.execute(insert(repositories), [{"id": i + 1, "name": n, "created_at": now}
                                                      for i, n in enumerate(names)])
            manifest_id = 0
            rows_m: list[dict] = []
            rows_t: list[dict] = []
            rows_b: list[dict] = []
            rows_blobs: list[dict] = []
            for index, name in enumerate(names):
                count = big_tags if name == BIG else per_repository
                layer = _digest(f"layer {name}")
                rows_b.append({"repository_id": index + 1, "digest": layer, "size": 1000 + index, "created_at": now})
                rows_blobs.append({"digest": layer, "size": 1000 + index, "state": "active", "epoch": 0,
                                   "updated_at": now})
                for t in range(count):
                    manifest_id += 1
                    payload = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                          "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                                     "digest": layer, "size": 2},
                                          "layers": [], "annotations": {"n": str(manifest_id)}}).encode()
                    rows_m.append({"id": manifest_id, "repository_id": index + 1, "digest": _digest(payload.decode()),
                                   "media_type": "application/vnd.oci.image.manifest.v1+json", "payload": payload,
                                   "size": len(payload), "created_at": now, "pushed_by": "seed"})
                    rows_t.append({"repository_id": index + 1, "name": f"v{t:05d}", "manifest_id": manifest_id,
                                   "updated_at": now, "pushed_by": "seed"})
                if len(rows_t) >= _BATCH or index == len(names) - 1:
                    await conn.execute(insert(manifests), rows_m)
                    await conn.execute(insert(tags), rows_t)
                    rows_m, rows_t = [], []
            await conn.execute(insert(repository_blobs), rows_b)
            await conn.execute(insert(blobs), rows_blobs)
        print(f"seeded {len(names)} repositories, {manifest_id} tags ({big_tags} in {BIG})", file=sys.stderr)
    finally:
        await database.dispose()


class Console:
    def __init__(self, base_url: str, creds: tuple[str, str]) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=60, headers={"origin": base_url})
        form = self.http.get("/ui/signin")
        token = _CSRF.search(form.text).group(1)  # type: ignore[union-attr]
        signed = self.http.post("/ui/signin", data={"csrf": token, "username": creds[0], "password": creds[1]})
        assert signed.status_code == 303, signed.text

    def time(self, path: str, rounds: int) -> list[float]:
        answer = self.http.get(path)  # warm-up (templates, caches)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
        took = []
        for _ in range(rounds):
            started = time.perf_counter()
            answer = self.http.get(path)
            took.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, (path, answer.status_code)
        return took

    def time_post(self, path: str, rounds: int) -> list[float]:
        token = _CSRF.search(self.http.get(path).text).group(1)  # type: ignore[union-attr]
        took = []
        for _ in range(rounds + 1):
            started = time.perf_counter()
            answer = self.http.post(path, data={"csrf": token})
            took.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, (path, answer.status_code)
        return took[1:]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repositories", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=100_000)
    parser.add_argument("--big-tags", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--budget-ms", type=float, default=300.0)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lading-bench-console-") as scratch:
        root = Path(scratch)
        data = root / "data"
        data.mkdir(mode=0o700)
        url = args.database_url or f"sqlite+aiosqlite:///{data}/registry.db"
        started = time.monotonic()
        asyncio.run(seed(url, repository_count=args.repositories, tag_count=args.tags, big_tags=args.big_tags))
        print(f"seeding took {time.monotonic() - started:.0f} s", file=sys.stderr)
        (root / "signing.pem").write_bytes(generate_signing_key_pem())
        port = free_port()
        env = {"LADING_AUTH__MODE": "token", "LADING_AUTH__SIGNING_KEY_FILE": str(root / "signing.pem"),
               "LADING_AUTH__BOOTSTRAP_ADMIN": ADMIN[0], "LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
               "LADING_METADATA__DATABASE_URL": url}
        serve = LadingProcess("serve", lading_command("serve", "--data-dir", str(data), "--port", str(port)),
                              log_dir=root, env=env, cwd=REPO_ROOT).start()
        try:
            assert serve.wait_for_output("Lading is serving on", timeout=120), serve.log()
            target = f"unix:{data / 'run' / 'metadata.sock'}"
            for command in (["user", "add", USER[0], "--password-stdin"],
                            *[["grant", "add", USER[0], f"team-{n}*/*", "pull"] for n in range(10)]):
                subprocess.run(lading_command(*command, "--metadata", target), input=USER[1] + "\n", text=True,
                               check=True, capture_output=True, cwd=REPO_ROOT)
            base = f"http://127.0.0.1:{port}"
            middle = _names(args.repositories)[args.repositories // 2]
            pages = {
                "repositories, first page": "/ui/",
                "repositories, a deep page": f"/ui/?last={middle}",
                "search (substring)": "/ui/?q=app-0421",
                f"tags of {BIG} ({args.big_tags}), first page": f"/ui/r/{BIG}",
                f"tags of {BIG}, filtered": f"/ui/r/{BIG}?q=v0999",
                "manifest + referrers": f"/ui/r/{BIG}/-/manifests/v{args.big_tags // 2:05d}",
                "admin: storage chart": "/ui/admin/storage",
                "admin: users": "/ui/admin/users",
                "admin: overview (GC stats)": "/ui/admin/",
            }
            rows = []
            worst = 0.0
            for who, creds in (("admin", ADMIN), ("viewer (1 in 10 visible)", USER)):
                console = Console(base, creds)
                for label, path in pages.items():
                    if who != "admin" and (path.startswith("/ui/admin") or BIG in path):
                        continue  # not the viewer's to see
                    took = sorted(console.time(path, args.rounds))
                    p95 = took[max(0, int(len(took) * 0.95) - 1)]
                    worst = max(worst, p95)
                    rows.append(f"| {label} | {who} | {statistics.median(took):.0f} | {p95:.0f} | {took[-1]:.0f} |")
            # The GC dry run: an explicit action (a POST), which scans what the collector would.
            took = sorted(Console(base, ADMIN).time_post("/ui/admin/gc", args.rounds))
            rows.append(f"| admin: GC dry run (POST, an action) | admin | {statistics.median(took):.0f} | "
                        f"{took[max(0, int(len(took) * 0.95) - 1)]:.0f} | {took[-1]:.0f} |")
            print(f"\n{args.repositories} repositories, {args.tags} tags, "
                  f"{'PostgreSQL' if args.database_url else 'SQLite'}; {args.rounds} requests per row (ms)\n")
            print("| page | account | p50 | p95 | max |\n|---|---|---|---|---|")
            print("\n".join(rows))
            return 0 if worst <= args.budget_ms else 1
        finally:
            serve.stop()


if __name__ == "__main__":
    sys.exit(main())
