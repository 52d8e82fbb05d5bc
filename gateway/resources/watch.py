"""`GET /lading/v1/watch?repository=<name>`: a repository's tag changes as Server-Sent Events
(issue 15, item 6), for GitOps controllers and CI that would otherwise poll `tags/list`.

Access: pull on the repository (the route's Endpoint checks it before this handler runs, with the
name taken from the query: routes.QueryNameEndpoint). The events come from the metadata plane's
change feed (ChangeService.WatchChanges, filtered to this repository), so they are in commit order
and a watcher resumes without a gap: every event has `id: <position>`; a client that reconnects
with `Last-Event-ID` (or `?after=<position>`) gets what it missed. Without either, the stream
starts at the present: nothing retained from before is replayed.

Event types (`event:`), each with a JSON `data:` line:
- `ready`: the stream is following (data: the position); sent once, before any change;
- `tag_pushed` {repository, tag, digest}, `tag_moved` {…, previous_digest}, `tag_deleted`
  {repository, tag, digest}, `manifest_deleted` {repository, digest, tags}, `repository_deleted`
  {repository};
- `reset`: the position asked for is no longer retained: changes were missed; re-read the
  repository's tags, then go on from this event's id.
A comment line (`: keep-alive`) is sent every `KEEPALIVE_SECONDS` so proxies keep the connection.
If the metadata plane goes away the stream resubscribes by itself; the client sees only a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from lading.metadata.v1 import changes_pb2, repository_changes_pb2
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway import params
from gateway.change_stream import ChangeStream
from gateway.context import Gateway
from services.common.errors import ErrorKind, RegistryError

KEEPALIVE_SECONDS = 15.0
_EVENT_NAMES = {
    repository_changes_pb2.REPOSITORY_CHANGE_KIND_TAG_PUSHED: "tag_pushed",
    repository_changes_pb2.REPOSITORY_CHANGE_KIND_TAG_MOVED: "tag_moved",
    repository_changes_pb2.REPOSITORY_CHANGE_KIND_TAG_DELETED: "tag_deleted",
    repository_changes_pb2.REPOSITORY_CHANGE_KIND_MANIFEST_DELETED: "manifest_deleted",
    repository_changes_pb2.REPOSITORY_CHANGE_KIND_REPOSITORY_DELETED: "repository_deleted",
}


def _position(text: str | None) -> int:
    if not text:
        return 0
    if not text.isdigit() or len(text) > 18:
        raise RegistryError(ErrorKind.UNSUPPORTED,
                            f"a watch position is a number from an earlier event's id, not {text!r}",
                            {"after": text})
    return int(text)


def sse(event: str, data: object, position: int | None = None) -> bytes:
    lines = [f"id: {position}"] if position is not None else []
    lines += [f"event: {event}", "data: " + json.dumps(data, separators=(",", ":"))]
    return ("\n".join(lines) + "\n\n").encode()


def _data(change: repository_changes_pb2.RepositoryChange) -> dict[str, object]:
    data: dict[str, object] = {"repository": change.repository}
    if change.tag:
        data["tag"] = change.tag
    if change.digest:
        data["digest"] = change.digest
    if change.previous_digest:
        data["previous_digest"] = change.previous_digest
    if change.kind == repository_changes_pb2.REPOSITORY_CHANGE_KIND_MANIFEST_DELETED:
        data["tags"] = list(change.tags)
    return data


async def watch(request: Request, gateway: Gateway) -> Response:
    raw = request.query_params.get("repository", "")
    if not raw:
        raise RegistryError(ErrorKind.NAME_INVALID,
                            "name the repository to watch: /lading/v1/watch?repository=<name>", {"name": ""})
    repository = params.repository_name(raw)
    after = _position(request.headers.get("last-event-id") or request.query_params.get("after"))
    if gateway.changes is None:
        raise RegistryError(ErrorKind.UNAVAILABLE, "this gateway has no change feed to watch; retry shortly")
    answers: asyncio.Queue[changes_pb2.WatchChangesResponse] = asyncio.Queue()
    stream = ChangeStream(
        gateway.changes, kinds=[repository_changes_pb2.CHANGE_KIND_REPOSITORY], subject=repository,
        heartbeat_seconds=KEEPALIVE_SECONDS, stale_after_seconds=KEEPALIVE_SECONDS * 2,
        reconnect_max_seconds=2.0, on_answer=answers.put_nowait, after=after,
    )
    return StreamingResponse(_events(stream, answers, resumed=after > 0), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def _events(stream: ChangeStream, answers: asyncio.Queue[changes_pb2.WatchChangesResponse], *,
                  resumed: bool) -> AsyncIterator[bytes]:
    stream.start()
    try:
        # Without a position to resume from, what is retained from before is not replayed.
        replaying = not resumed
        ready = False
        while True:
            try:
                # Not wait_for: on Python 3.11 it can swallow the cancellation of a stopping server.
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    answer = await answers.get()
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if answer.reset and (resumed or ready):
                yield sse("reset", {"position": answer.position}, answer.position)
            if not replaying:
                for change in answer.changes:
                    if change.WhichOneof("change") == "repository":
                        name = _EVENT_NAMES.get(change.repository.kind)
                        if name is not None:
                            yield sse(name, _data(change.repository), change.position)
            if answer.caught_up and not ready:
                ready = True
                replaying = False
                yield sse("ready", {"position": answer.position}, answer.position)
            elif not answer.changes:
                yield b": keep-alive\n\n"
    finally:
        with contextlib.suppress(Exception):
            await stream.close()
