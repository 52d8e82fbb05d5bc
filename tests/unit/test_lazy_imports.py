"""A plane loads only what its configuration uses (issue 13: resident memory and start-up time).

Every import below costs a plane tens of milliseconds at each start and megabytes for its whole
life (docs/benchmarks.md has the figures), and none is needed by the embedded default (SQLite,
the filesystem, no auth, no tracing, no metrics, no event endpoints). Each check runs in a fresh
interpreter, so what earlier tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Loaded only when something needs them: migrations to run, S3, webhooks, token auth, /metrics,
# tracing (and JSON logs), PostgreSQL.
OPTIONAL = ["alembic", "minio", "urllib3", "httpx", "jwt", "cryptography", "prometheus_client", "aiohttp",
            "opentelemetry.sdk", "sqlalchemy.dialects.postgresql", "asyncpg"]


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", ["services.metadata.main", "services.blob.main", "gateway.main"])
def test_a_plane_imports_no_optional_dependency(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    assert sorted(name for name in OPTIONAL if name in loaded) == []


def test_token_mode_loads_pyjwt_at_start_up_not_on_the_first_token(tmp_path: Path) -> None:
    """Lazy only where the configuration may not need it: in token mode every token needs PyJWT,
    and importing it at the first one read its modules on the gateway's event loop (~50 ms)."""
    key = tmp_path / "token.pem"
    code = (
        "import asyncio\n"
        "from pathlib import Path\n"
        "import grpc\n"
        "from gateway.auth.keys import generate_signing_key_pem\n"
        "from gateway.auth.setup import build_auth\n"
        "from services.common.settings import AuthSettings\n"
        f"Path({str(key)!r}).write_bytes(generate_signing_key_pem())\n"
        "async def build():\n"
        "    channel = grpc.aio.insecure_channel('unix:/nonexistent')\n"
        f"    build_auth(AuthSettings(mode='token', signing_key_file={str(key)!r}), channel, timeout=1)\n"
        "    await channel.close()\n"
        "import sys\n"
        "assert 'jwt' not in sys.modules, 'loaded before the app was built'\n"
        "asyncio.run(build())\n"
    )
    assert "jwt" in _loaded_after(code)


def test_a_plane_reads_no_other_planes_code() -> None:
    # Each plane's composition root stays out of the others' (the embedded registry runs them
    # as separate processes: services/supervisor.py).
    assert not {"sqlalchemy", "aiosqlite", "uvicorn", "starlette", "aiohttp"} & _loaded_after("import services.blob.main")
    assert not {"sqlalchemy", "aiohttp", "services.blob.main"} & _loaded_after("import gateway.main")
    assert not {"aiohttp", "uvicorn", "starlette"} & _loaded_after("import services.metadata.main")


def test_a_current_database_is_opened_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/registry.db"
    migrate = f"import asyncio\nfrom services.metadata.migrations import migrate\nasyncio.run(migrate({url!r}))"
    assert "alembic" in _loaded_after(migrate), "the first start migrates, with Alembic"
    assert "alembic" not in _loaded_after(migrate), "a database already at head needs no Alembic"


def test_the_plane_migrates_a_new_database_in_a_child_without_loading_alembic(tmp_path: Path) -> None:
    """The metadata plane's auto-migration (migrate_in_child): the upgrade happens in a child
    process, so Alembic (~11 MiB) never stays resident in the plane, and the database is at head."""
    url = f"sqlite+aiosqlite:///{tmp_path}/registry.db"
    code = (
        "import asyncio\n"
        "from services.common.settings import MetadataSettings\n"
        "from services.metadata.migrations import check_schema_current, migrate_in_child\n"
        "from services.metadata.store.engine import open_database\n"
        "async def main():\n"
        f"    db = open_database(MetadataSettings(database_url={url!r}))\n"
        "    try:\n"
        "        await migrate_in_child(db)\n"
        "        assert await check_schema_current(db)\n"
        "    finally:\n"
        "        await db.dispose()\n"
        "asyncio.run(main())"
    )
    assert "alembic" not in _loaded_after(code)
    # A database only this process can open (in-memory SQLite) is migrated in-process.
    memory = code.replace(repr(url), repr("sqlite+aiosqlite:///:memory:"))
    assert "alembic" in _loaded_after(memory)


def test_the_migration_child_runs_this_code_whatever_the_current_folder_holds(tmp_path: Path) -> None:
    """A `services/` folder in the current folder (an operator's own project) must not be what
    the migration child imports."""
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "__init__.py").write_text("raise SystemExit('the wrong services package')\n")
    url = f"sqlite+aiosqlite:///{tmp_path}/registry.db"
    code = (
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\nimport asyncio\n"
        "from services.common.settings import MetadataSettings\n"
        "from services.metadata.migrations import check_schema_current, migrate_in_child\n"
        "from services.metadata.store.engine import open_database\n"
        "async def main():\n"
        f"    db = open_database(MetadataSettings(database_url={url!r}))\n"
        "    await migrate_in_child(db)\n"
        "    assert await check_schema_current(db)\n"
        "    await db.dispose()\n"
        "asyncio.run(main())"
    )
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_lading_serve_starts_without_the_operator_commands() -> None:
    loaded = _loaded_after("from services.cli import _plain_serve\nassert _plain_serve(['serve']) is not None")
    assert not {name for name in loaded if name.startswith(("services.cli_", "grpc", "pydantic", "asyncio"))}


def test_the_head_read_from_the_revision_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from services.metadata.migrations import alembic_config, head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
