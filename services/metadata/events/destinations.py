"""Where event deliveries may go, how their requests are built, and how their URLs are shown.

- **Shown redacted.** A URL in a log line, an error kept in the outbox (`lading events list`) or
  any other message goes through `redact_url`: user info becomes `***` and query values `***`
  (`https://***@hooks.example/in?token=***`). Endpoint *names* label metrics and rows.
- **Credentials.** User info in the URL (`https://user:pass@host/…`) is sent as
  `Authorization: Basic …` and never as part of the URL. An endpoint that has both user info and
  an `Authorization` header is refused at start-up (`EventsConfigError`): which one was meant
  cannot be known, and silently picking one sent the wrong credential before.
- **Destinations.** Before every attempt the host name is resolved and every address it resolves
  to is checked: link-local and cloud metadata addresses (`REFUSED_BY_DEFAULT`) are refused unless
  `events.allowed_destinations` lists a network containing them; when that list is not empty, the
  host must match one of its names or all its addresses must lie in its networks. The request then
  goes to a checked address (the next one when a connection is refused; the name stays in `Host`
  and in TLS's SNI and certificate check),
  so a name that resolves differently a moment later (DNS rebinding) cannot move it elsewhere.
- **Redirects** are never followed (delivery.py): a 3xx is a failed attempt.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from services.common.settings import EventEndpointSettings, EventsSettings

if TYPE_CHECKING:
    import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) → the addresses it resolves to; the default asks the system resolver.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Refused unless an allowed_destinations network contains them: where cloud instance credentials
# and link-local services answer.
REFUSED_BY_DEFAULT: tuple[tuple[str, str], ...] = (
    ("169.254.0.0/16", "IPv4 link-local: the metadata service of AWS, GCP, Azure, OpenStack, Oracle, "
                       "DigitalOcean; ECS task credentials"),
    ("fe80::/10", "IPv6 link-local"),
    ("fd00:ec2::254/128", "the AWS instance metadata service over IPv6"),
    ("100.100.100.200/32", "the Alibaba Cloud metadata service"),
    ("0.0.0.0/8", "'this network' (reaches this host)"),
    ("::/128", "the unspecified IPv6 address (reaches this host)"),
)
_REFUSED = tuple((ipaddress.ip_network(cidr), why) for cidr, why in REFUSED_BY_DEFAULT)


# A host name entry of the allow-list, optionally `*.` + a domain (any name below it).
_HOST_PATTERN = re.compile(r"(\*\.)?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")


class EventsConfigError(ValueError):
    """An events setting that cannot work; the metadata plane refuses to start with it."""


class DestinationRefused(Exception):
    """This attempt's destination is not allowed (the message says why and which setting to change)."""


def redact_url(url: str) -> str:
    """`url` without secrets: user info → `***`, each query value → `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        query = "&".join(f"{quote(name, safe='')}=***" for name, _ in parse_qsl(query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scrub(text: str, url: str) -> str:
    """`text` (an error message) with `url` and its secrets (user info, query) replaced by their
    redacted forms, whichever way they were spelled in it."""
    parts = urlsplit(url)
    secrets = {url: redact_url(url)}
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        secrets[userinfo] = "***"
        for piece in (parts.username, parts.password):
            if piece:
                secrets[piece] = "***"
                secrets[unquote(piece)] = "***"
    if parts.query:
        secrets[parts.query] = urlsplit(redact_url(url)).query
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, secrets[secret])
    return text


@dataclass(frozen=True)
class Destination:
    """One endpoint's URL taken apart: what is requested, and what is shown."""

    url: httpx.URL  # without user info
    host: str
    port: int
    display: str  # redacted, for logs and errors
    authorization: str | None  # from the URL's user info


def destination_of(endpoint: EventEndpointSettings) -> Destination:
    """Parses and checks `endpoint.url` (raises EventsConfigError naming the endpoint)."""
    import httpx  # only with endpoints configured: a metadata plane without them never loads it

    display = redact_url(endpoint.url)
    try:
        url = httpx.URL(endpoint.url)
    except (httpx.InvalidURL, ValueError) as error:
        raise EventsConfigError(f"events endpoint {endpoint.name!r}: url {display} is not a URL ({error})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise EventsConfigError(f"events endpoint {endpoint.name!r}: url {display} must be http:// or https:// "
                                "with a host")
    authorization = None
    if url.userinfo:
        if any(name.lower() == "authorization" for name in endpoint.headers):
            raise EventsConfigError(
                f"events endpoint {endpoint.name!r}: the url carries credentials ({display}) and headers has an "
                "Authorization header; keep one of them (the url's user:password is sent as Basic auth)")
        pair = f"{url.username}:{url.password}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    return Destination(url=url.copy_with(username=None, password=None), host=url.host, port=port,
                       display=display, authorization=authorization)


class DestinationPolicy:
    """`events.allowed_destinations` and the default refusals (see the module docstring)."""

    def __init__(self, allowed: Sequence[str], resolve: Resolver | None = None) -> None:
        self._names: list[str] = []
        self._networks: list[IpNetwork] = []
        for entry in allowed:
            text = entry.strip()
            try:
                self._networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            name = text.lower().rstrip(".")
            if not _HOST_PATTERN.fullmatch(name):
                raise EventsConfigError(
                    f"events.allowed_destinations: {entry!r} is neither a network (10.0.0.0/8, 2001:db8::/32, "
                    "192.0.2.7) nor a host name (hooks.example.com, *.example.com)")
            self._names.append(name)
        self._resolve = resolve or _system_resolve

    @property
    def restricted(self) -> bool:
        return bool(self._names or self._networks)

    def _name_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == name or (name.startswith("*.") and host.endswith(name[1:])) for name in self._names)

    def _explicitly_allowed(self, address: IpAddress) -> bool:
        return any(address in network for network in self._networks if network.version == address.version)

    async def addresses_for(self, destination: Destination) -> list[str]:
        """The addresses to connect to for `destination`, in the resolver's order, after resolving
        its host now; raises DestinationRefused when any address it resolves to is not allowed."""
        host = destination.host
        literal = _literal(host)
        if literal is not None:
            found = [literal]
        else:
            try:
                found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await self._resolve(host, destination.port)]
            except (OSError, ValueError) as error:
                raise DestinationRefused(f"{host} does not resolve ({error})") from None
            if not found:
                raise DestinationRefused(f"{host} does not resolve to any address")
        seen = " (resolved now)" if literal is None else ""
        for address in found:
            checked = _unmapped(address)
            why = _default_refusal(checked)
            if why is not None and not self._explicitly_allowed(checked):
                raise DestinationRefused(
                    f"{host}{seen} is {checked}, {why}; such addresses are refused unless "
                    "events.allowed_destinations lists a network containing them")
        if self.restricted and not self._name_allowed(host):
            outside = [str(a) for a in found if not self._explicitly_allowed(_unmapped(a))]
            if outside:
                raise DestinationRefused(
                    f"{host}{seen} ({', '.join(outside)}) is not in events.allowed_destinations")
        return [str(address) for address in found]


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _unmapped(address: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address (::ffff:169.254.169.254) as the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _default_refusal(address: IpAddress) -> str | None:
    for network, why in _REFUSED:
        if network.version == address.version and address in network:
            return why
    return None


async def _system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def pinned_request(destination: Destination, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, bytes]]:
    """(URL, extra headers, extensions) of a request to `destination` that connects to `address`:
    the host name travels in `Host` and, over TLS, in SNI and the certificate check."""
    if _literal(destination.host) is not None:
        return destination.url, {}, {}
    name = destination.url.raw_host.decode("ascii")  # IDNA-encoded, as it goes on the wire
    host_header = name if destination.url.port is None else f"{name}:{destination.url.port}"
    extensions = {"sni_hostname": name.encode("ascii")} if destination.url.scheme == "https" else {}
    return destination.url.copy_with(host=address), {"Host": host_header}, extensions


def validate(settings: EventsSettings) -> dict[str, Destination]:
    """Checks every endpoint and the allow-list at start-up; the endpoints' destinations by name.
    Raises EventsConfigError."""
    DestinationPolicy(settings.allowed_destinations)
    return {endpoint.name: destination_of(endpoint) for endpoint in settings.endpoints}
