"""`lading watch REPO`: follows a repository's tag changes through a gateway's
`GET /lading/v1/watch` (Server-Sent Events; gateway/resources/watch.py), as a user: it needs pull
on the repository, nothing more, and no access to the gRPC planes.

    lading watch [--registry URL] [--username NAME] [--json] [--after POSITION] REPO

The password (or a robot's secret) comes from LADING_WATCH_PASSWORD, else it is asked for when
the registry wants credentials. Bearer-token registries get the token from the realm their
challenge names; Basic-mode ones get Basic credentials. When the connection drops the command
reconnects with the last event's id, so nothing is missed; Ctrl-C ends it.

Standard library only: `lading`'s operator commands must not load HTTP client libraries.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import http.client
import json
import os
import re
import sys
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

COMMAND = "watch"
_RETRY_SECONDS = 1.0


def add_commands(commands: Any) -> None:
    watch = commands.add_parser("watch", help="follow a repository's tag changes (pushed, moved, deleted)")
    watch.add_argument("repository")
    watch.add_argument("--registry", default=os.environ.get("LADING_REGISTRY", "http://127.0.0.1:5000"),
                       help="the registry's URL (default $LADING_REGISTRY or http://127.0.0.1:5000)")
    watch.add_argument("--username", default=os.environ.get("LADING_WATCH_USERNAME", ""),
                       help="account to sign in as (password: $LADING_WATCH_PASSWORD or asked)")
    watch.add_argument("--json", action="store_true", help="one JSON object per event")
    watch.add_argument("--after", default="", help="resume after this event id")


class WatchError(RuntimeError):
    """Something the user must fix (credentials, a name); the message says what."""


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=60)
    return http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=60)


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class Credentials:
    def __init__(self, username: str) -> None:
        self.username = username
        self._password: str | None = os.environ.get("LADING_WATCH_PASSWORD")

    def basic(self) -> str:
        if not self.username:
            raise WatchError("the registry wants credentials: give --username (and LADING_WATCH_PASSWORD)")
        if self._password is None:
            self._password = getpass.getpass(f"password for {self.username}: ")
        return "Basic " + base64.b64encode(f"{self.username}:{self._password}".encode()).decode()


def _token(challenge: dict[str, str], credentials: Credentials) -> str:
    realm = challenge.get("realm", "")
    if not realm:
        raise WatchError("the registry's challenge names no token realm")
    query = {k: v for k, v in (("service", challenge.get("service", "")), ("scope", challenge.get("scope", ""))) if v}
    url = realm + ("&" if "?" in realm else "?") + urlencode(query)
    parts = urlsplit(url)
    connection = _connection(url)
    headers = {"Authorization": credentials.basic()} if credentials.username else {}
    connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.status != 200:
        raise WatchError(f"the token service refused ({response.status}): {body[:300].decode(errors='replace')}")
    document = json.loads(body)
    return "Bearer " + (document.get("token") or document.get("access_token") or "")


def _open(registry: str, repository: str, after: str, authorization: str | None
          ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection = _connection(registry)
    path = urlsplit(registry).path.rstrip("/") + "/lading/v1/watch?" + urlencode({"repository": repository})
    headers = {"Accept": "text/event-stream"}
    if after:
        headers["Last-Event-ID"] = after
    if authorization:
        headers["Authorization"] = authorization
    connection.request("GET", path, headers=headers)
    return connection, connection.getresponse()


def _describe(event: str, data: dict[str, Any]) -> str:
    repository = data.get("repository", "")
    tag = data.get("tag", "")
    digest = data.get("digest", "")
    if event == "tag_pushed":
        return f"pushed   {repository}:{tag}  {digest}"
    if event == "tag_moved":
        return f"moved    {repository}:{tag}  {digest}  (was {data.get('previous_digest', '')})"
    if event == "tag_deleted":
        return f"deleted  {repository}:{tag}  (was {digest})"
    if event == "manifest_deleted":
        tags = ", ".join(data.get("tags", []))
        return f"deleted  {repository}@{digest}" + (f"  (tags: {tags})" if tags else "")
    if event == "repository_deleted":
        return f"deleted  {repository}  (the whole repository)"
    if event == "reset":
        return "changes were missed (older than the registry keeps); re-read the tags"
    return f"{event} {json.dumps(data)}"


def follow(args: argparse.Namespace, out: Any = sys.stdout) -> int:
    credentials = Credentials(args.username)
    authorization: str | None = None
    after = args.after
    announced = False
    while True:
        try:
            connection, response = _open(args.registry, args.repository, after, authorization)
        except OSError as exc:
            print(f"lading watch: cannot reach {args.registry} ({exc}); retrying", file=sys.stderr)
            time.sleep(_RETRY_SECONDS)
            continue
        if response.status in (401, 403) and authorization is None:
            scheme, challenge = _challenge(response.getheader("www-authenticate", ""))
            response.read()
            connection.close()
            authorization = _token(challenge, credentials) if scheme == "bearer" else credentials.basic()
            continue
        if response.status != 200:
            body = response.read().decode(errors="replace")
            connection.close()
            raise WatchError(f"the registry answered {response.status}: {body[:500]}")
        event, data_lines, event_id = "message", [], ""
        try:
            while True:
                raw = response.readline()
                if not raw:
                    break
                line = raw.decode().rstrip("\r\n")
                if line == "":
                    if data_lines:
                        data = json.loads("\n".join(data_lines))
                        if event_id:
                            after = event_id
                        if event == "ready":
                            if not announced:
                                print(f"watching {args.repository} (from position {data.get('position')})",
                                      file=sys.stderr)
                                announced = True
                        elif args.json:
                            print(json.dumps({"event": event, "id": event_id, **data}), file=out, flush=True)
                        else:
                            print(_describe(event, data), file=out, flush=True)
                    event, data_lines, event_id = "message", [], ""
                elif line.startswith(":"):
                    continue
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data_lines.append(line[5:].strip())
                elif line.startswith("id:"):
                    event_id = line[3:].strip()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        # The stream ended (a gateway restarted, a proxy timed out): go on from the last event.
        authorization = None if authorization and authorization.startswith("Bearer") else authorization
        time.sleep(_RETRY_SECONDS)


def run(args: argparse.Namespace) -> int:
    try:
        return follow(args)
    except WatchError as exc:
        print(f"lading watch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
