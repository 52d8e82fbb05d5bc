"""Where event deliveries go and what they reveal: credentials in the endpoint URL, redirects,
header precedence and destination checks, with DeliveryWorker against real HTTP receivers on
127.0.0.1 and a real SQLite outbox (the end-to-end twin with `lading serve` is test_stack_safety.py).

Host names that must resolve to other addresses come from a resolver handed to the worker (no
test may depend on, or send traffic to, anything but 127.0.0.1); `localhost` goes through the
system resolver.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from services.common.settings import EventEndpointSettings, EventsSettings
from services.metadata.events.delivery import DeliveryWorker
from services.metadata.events.envelope import Source
from services.metadata.events.outbox import EventOutbox
from services.metadata.events.store import OutboxStore
from services.metadata.store.engine import Database
from tests.events.receiver import Receiver
from tests.support.metadata_db import migrated_database

SOURCE = Source(addr="node-1:5000", instance_id="instance-1")
PASSWORD = "pa:ss@w0rd"  # needs percent-encoding in a URL: checked in both spellings
QUOTED_PASSWORD = "pa%3Ass%40w0rd"


@pytest.fixture
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    # Delivery does not depend on the dialect (the outbox suite runs on both).
    async with migrated_database("sqlite", request, tmp_path) as db:
        yield db


@pytest.fixture
def other_origin() -> Iterator[Receiver]:
    server = Receiver().start()
    try:
        yield server
    finally:
        server.stop()


def hook(url: str, **extra: Any) -> EventEndpointSettings:
    fields: dict[str, Any] = {"name": "hook", "url": url, "timeout_seconds": 5.0, "max_attempts": 5,
                              "backoff_base_seconds": 0.0, "backoff_cap_seconds": 0.0}
    fields.update(extra)
    return EventEndpointSettings(**fields)


class FixedResolver:
    """A resolver with fixed answers per host name; records what it was asked."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"unknown host {host}")
        return self.answers[host]


async def worker_with_one_event(db: Database, *endpoints: EventEndpointSettings, resolve: Any = None,
                                **settings: Any) -> tuple[DeliveryWorker, OutboxStore]:
    config = EventsSettings(endpoints=list(endpoints), **settings)
    store = OutboxStore(db)
    async with db.writes.begin() as conn:
        await conn.run_sync(EventOutbox(config, SOURCE).tag_deleted, "team/app", "v1")
    extra = {"resolve": resolve} if resolve is not None else {}
    return DeliveryWorker(config, store, **extra), store


async def rows(store: OutboxStore) -> list[Any]:
    return await store.list(state="", endpoint="", limit=100, before_id=0)


async def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_logged_or_stored(
        database: Database, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's own request lines included
    url = f"http://robot:{QUOTED_PASSWORD}@127.0.0.1:{receiver.port}/events?channel=ci"
    worker, store = await worker_with_one_event(database, hook(url, headers={"X-Team": "ci"}))
    receiver.status = 500
    await worker.run_once()
    [row] = await rows(store)
    assert row.state == "pending" and row.attempts == 1 and row.last_error == "HTTP 500"
    assert "delivery to hook (http://***@127.0.0.1" in caplog.text
    receiver.status = 200
    await worker.run_once()
    await worker.close()

    [row] = await rows(store)
    assert row.state == "delivered"
    path, headers = receiver.requests[-1]
    assert path == "/events?channel=ci"
    assert headers["authorization"] == "Basic " + base64.b64encode(f"robot:{PASSWORD}".encode()).decode()
    assert headers["x-team"] == "ci"
    for secret in (PASSWORD, QUOTED_PASSWORD, "robot:"):
        assert secret not in caplog.text


async def test_a_redirect_is_a_failed_attempt_and_nothing_reaches_the_other_origin(
        database: Database, receiver: Receiver, other_origin: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.status = 307
    receiver.location = f"http://127.0.0.1:{other_origin.port}/collect?key=abc"
    endpoint = hook(receiver.url, headers={"Authorization": "Bearer hook-secret", "X-Signature": "sig"},
                    max_attempts=2)
    worker, store = await worker_with_one_event(database, endpoint)
    await worker.run_once()
    await worker.run_once()
    await worker.close()

    assert receiver.attempts == 2 and other_origin.attempts == 0
    [row] = await rows(store)
    assert row.state == "dead" and row.attempts == 2
    assert row.last_error.startswith(f"HTTP 307 redirect to http://127.0.0.1:{other_origin.port}/collect?key=***, "
                                     "not followed")
    assert "HTTP 307 redirect" in caplog.text and "now dead" in caplog.text
    assert "abc" not in caplog.text
    # A 301/302/308 is refused the same way (httpx treats them alike; one more for good measure).
    receiver.status = 302
    worker, store = await worker_with_one_event(database, hook(receiver.url, name="other"))
    await worker.run_once()
    await worker.close()
    assert other_origin.attempts == 0
    assert [r.last_error[:21] for r in await rows(store) if r.endpoint == "other"] == ["HTTP 302 redirect to "]


async def test_an_authorization_header_with_credentials_in_the_url_is_refused_at_start_up(
        database: Database, receiver: Receiver) -> None:
    from services.metadata.events.destinations import EventsConfigError

    both = hook(f"http://u:p@127.0.0.1:{receiver.port}/events", headers={"authorization": "Bearer t"})
    with pytest.raises(EventsConfigError) as refused:
        DeliveryWorker(EventsSettings(endpoints=[both]), OutboxStore(database))
    assert "'hook'" in str(refused.value) and "keep one of them" in str(refused.value)
    assert ":p@" not in str(refused.value)
    # Either one alone is fine, and a configured header is sent as configured.
    worker, _ = await worker_with_one_event(database, hook(receiver.url, headers={"Authorization": "Bearer t"}))
    await worker.run_once()
    await worker.close()
    assert receiver.requests[-1][1]["authorization"] == "Bearer t"


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[fe80::1]:8080/hook",
    "http://instance-data.test/",  # a name that resolves to the metadata address
    "http://mixed.test/",  # one good address is not enough
])
async def test_link_local_and_cloud_metadata_destinations_are_refused_by_default(
        database: Database, url: str) -> None:
    resolver = FixedResolver({"instance-data.test": ["169.254.169.254"],
                              "mixed.test": ["127.0.0.1", "169.254.169.254"]})
    worker, store = await worker_with_one_event(database, hook(url, timeout_seconds=1.0), resolve=resolver)
    await worker.run_once()
    await worker.close()
    [row] = await rows(store)
    assert row.state == "pending" and row.attempts == 1
    assert row.last_error.startswith("destination refused: "), row.last_error
    assert "refused unless events.allowed_destinations lists a network containing them" in row.last_error


async def test_destinations_are_checked_by_their_resolved_addresses_and_pinned_to_them(
        database: Database, receiver: Receiver) -> None:
    # A name is resolved at every attempt and the request goes to the address that was checked;
    # the name travels in Host.
    resolver = FixedResolver({"hooks.test": ["127.0.0.1"]})
    url = f"http://hooks.test:{receiver.port}/events"
    worker, store = await worker_with_one_event(database, hook(url), resolve=resolver,
                                                allowed_destinations=["hooks.test"])
    await worker.run_once()
    assert [r.state for r in await rows(store)] == ["delivered"]
    assert receiver.requests[-1][1]["host"] == f"hooks.test:{receiver.port}"
    resolver.answers["hooks.test"] = ["169.254.169.254"]  # the name moves (DNS rebinding)
    async with database.writes.begin() as conn:
        await conn.run_sync(EventOutbox(EventsSettings(endpoints=[hook(url)]), SOURCE).tag_deleted, "team/app", "v2")
    await worker.run_once()
    await worker.close()
    assert resolver.asked == ["hooks.test", "hooks.test"]
    assert len(receiver.requests) == 1
    assert (await rows(store))[0].last_error.startswith("destination refused: hooks.test (resolved now) is "
                                                        "169.254.169.254")


async def test_a_refused_connection_moves_on_to_the_next_checked_address(database: Database,
                                                                       receiver: Receiver) -> None:
    # The receiver listens on 127.0.0.1 only: [::1] refuses the connection, nothing was sent.
    resolver = FixedResolver({"dual.test": ["::1", "127.0.0.1"]})
    worker, store = await worker_with_one_event(database, hook(f"http://dual.test:{receiver.port}/events"),
                                                resolve=resolver)
    await worker.run_once()
    await worker.close()
    assert [r.state for r in await rows(store)] == ["delivered"]
    assert receiver.attempts == 1


@pytest.mark.parametrize(("allowed", "delivered"), [
    (["10.0.0.0/8"], False),  # localhost resolves (system resolver) to loopback: not listed
    (["hooks.example.com", "*.example.org"], False),
    (["localhost"], True),
    (["127.0.0.0/8", "::1"], True),
])
async def test_the_allow_list_restricts_destinations(database: Database, receiver: Receiver,
                                                     allowed: list[str], delivered: bool) -> None:
    url = f"http://localhost:{receiver.port}/events"
    worker, store = await worker_with_one_event(database, hook(url), allowed_destinations=allowed)
    await worker.run_once()
    await worker.close()
    [row] = await rows(store)
    assert (row.state == "delivered") is delivered, row.last_error
    if not delivered:
        assert row.last_error.startswith("destination refused: localhost (resolved now) (")
        assert row.last_error.endswith(") is not in events.allowed_destinations")
        assert receiver.attempts == 0


async def test_policy_edges() -> None:
    from services.metadata.events.destinations import (
        DestinationPolicy,
        DestinationRefused,
        EventsConfigError,
        destination_of,
    )

    metadata = destination_of(hook("http://169.254.169.254/latest"))
    # An explicitly listed network lifts the default refusal (no request is made here).
    assert await DestinationPolicy(["169.254.169.254/32"]).addresses_for(metadata) == ["169.254.169.254"]
    # A host name entry never does: the name may resolve anywhere.
    resolver = FixedResolver({"hooks.example.com": ["169.254.169.254"]})
    named = destination_of(hook("https://hooks.example.com/in"))
    with pytest.raises(DestinationRefused):
        await DestinationPolicy(["hooks.example.com"], resolver).addresses_for(named)
    with pytest.raises(DestinationRefused, match="does not resolve"):
        await DestinationPolicy([], FixedResolver({})).addresses_for(named)
    wildcard = DestinationPolicy(["*.example.com"], FixedResolver({"a.b.example.com": ["192.0.2.1"],
                                                                   "badexample.com": ["192.0.2.1"]}))
    assert await wildcard.addresses_for(destination_of(hook("http://a.b.example.com/"))) == ["192.0.2.1"]
    with pytest.raises(DestinationRefused):
        await wildcard.addresses_for(destination_of(hook("http://badexample.com/")))
    for entry in ("not a host!", "*", "10.0.0.0/33", "http://x/"):
        with pytest.raises(EventsConfigError, match="allowed_destinations"):
            DestinationPolicy([entry])
    for bad in ("ftp://example.com/x", "example.com/x", "http:///nohost"):
        with pytest.raises(EventsConfigError, match="'hook'"):
            destination_of(hook(bad))


def test_redact_url() -> None:
    from services.metadata.events.destinations import redact_url

    assert redact_url("https://user:pw@hooks.example:8443/in/x?token=t0k&v=1") == \
        "https://***@hooks.example:8443/in/x?token=***&v=***"
    assert redact_url("http://hooks.example/in") == "http://hooks.example/in"
    assert redact_url("http://tok3n@[::1]:80/") == "http://***@[::1]:80/"
