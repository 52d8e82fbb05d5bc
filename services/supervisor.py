"""`lading serve`: the embedded registry, three planes as three child processes on one machine.

Layout under the data folder (default `./data`):
    registry.db        SQLite database of the metadata plane
    blobs/             filesystem root of the blob plane
    run/               the planes' sockets: 0700 whatever the umask (an existing one of ours is
                       narrowed to 0700, one of another user refused), sockets 0600: callers
                       there are trusted with every role (grpc_access.trust_unix_socket_peers)
    run/metadata.sock  gRPC unix socket of the metadata plane
    run/blob.sock      gRPC unix socket of the blob plane
Blob GETs answer 307 to the blob plane's direct-read server (sendfile; a free port on the
gateway's host, `blob.direct_reads.listen` to pin it), so pulled bytes skip gRPC.

Settings reach the children as LADING_* environment variables. The supervisor only fills in what
the user has not set (in the environment or LADING_CONFIG_FILE), so e.g.
`LADING_METADATA__DATABASE_URL=postgresql+asyncpg://...` points the embedded stack at PostgreSQL;
the `--host`/`--port`/`--data-dir` flags, when given, win.

Lifecycle (written order):
  claim:  bind the registry port (a port another process holds stops here, exit 2, naming the port
          and `--port` / LADING_GATEWAY__PORT) and check the planes' other listen addresses
          (services/serve_listeners.py); record the planes' targets in `run/serve.json` for the
          operator commands (services/common/serve_record.py; removed on stop).
  start:  metadata and blob → wait until both report grpc.health SERVING → gateway (it inherits
          the bound port, `gateway.listen_fds`, and the supervisor closes its copy) → wait until
          GET /v2/ answers (200, or 401 with auth on): only that child can answer on that socket
          → print "Lading is serving on http://HOST:PORT" (https:// when `gateway.tls.cert_file`
          is set: the gateway child reads the same settings and serves HTTPS itself; the probe
          then speaks TLS without checking the certificate, as it only asks whether its own child
          is up).
  stop:   on SIGINT/SIGTERM, or when any child dies: SIGTERM to gateway, then blob, then metadata,
          each waited for (SIGKILL after a grace period). A child that died on its own makes the
          exit status non-zero.
Children run in their own process group (so a terminal's Ctrl-C reaches only the supervisor,
which then stops them in order) and, on Linux, are told to exit if the supervisor itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.paths import UnsafeFolder, ensure_private_folder
from services.common.private_files import make_private_folder, restrict_new_files
from services.common.serve_record import remove_record, write_record
from services.common.settings import Settings, is_user_set, load_settings
from services.serve_listeners import Listen, ListenUnavailable, bind_gateway, check_free, close_all

# How long the planes may take to come up, and to go down before they are killed.
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 20.0
# Exit status when an address `lading serve` must listen on is taken (nothing was started).
LISTEN_UNAVAILABLE_EXIT = 2
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class ServePlan:
    """What `lading serve` will run: resolved addresses and the env vars it adds for its children."""

    data_dir: Path
    host: str
    port: int
    metadata_target: str
    blob_target: str
    env: dict[str, str] = field(default_factory=dict)
    # "https" when the gateway serves TLS (settings.gateway.tls.cert_file).
    scheme: str = "http"
    # The planes' other listen addresses, checked before any plane starts.
    listens: tuple[Listen, ...] = ()


def _user_set(settings: Settings, dotted: str, environ: Mapping[str, str]) -> bool:
    """True when the user chose `dotted` (e.g. "metadata.database_url") in the env or config file."""
    return is_user_set(settings, dotted, environ)


def _target_for(listen: str) -> str:
    """A client target for a listen address (wildcard hosts become loopback)."""
    for wildcard in ("0.0.0.0:", "[::]:"):
        if listen.startswith(wildcard):
            return "127.0.0.1:" + listen[len(wildcard) :]
    return listen


def plan_serve(
    settings: Settings,
    environ: Mapping[str, str],
    *,
    data_dir: str | None = None,
    host: str | None = None,
    port: int | None = None,
) -> ServePlan:
    """Resolves the embedded layout under the data folder without overriding user choices."""
    env: dict[str, str] = {}

    def default(dotted: str, value: str) -> str:
        if _user_set(settings, dotted, environ):
            node: Any = settings
            for part in dotted.split("."):
                node = getattr(node, part)
            return str(node)
        env["LADING_" + dotted.replace(".", "__").upper()] = value
        return value

    if data_dir is not None:
        root = Path(data_dir).resolve()
        env["LADING_DATA_DIR"] = str(root)
    else:
        root = Path(default("data_dir", str(Path("data").resolve()))).resolve()
    run = root / "run"
    metadata_listen = default("metadata.listen", f"unix:{run / 'metadata.sock'}")
    blob_listen = default("blob.listen", f"unix:{run / 'blob.sock'}")
    metadata_target = default("gateway.metadata_target", _target_for(metadata_listen))
    blob_target = default("gateway.blob_target", _target_for(blob_listen))
    default("gc.blob_target", blob_target)
    default("metadata.database_url", f"sqlite+aiosqlite:///{root / 'registry.db'}")
    default("blob.filesystem.root", str(root / "blobs"))
    if host is not None:
        env["LADING_GATEWAY__HOST"] = host
    else:
        host = settings.gateway.host
    if port is not None:
        env["LADING_GATEWAY__PORT"] = str(port)
    else:
        port = settings.gateway.port
    # Blob GETs redirect to the blob plane's own file server (sendfile, no gRPC hop) on the
    # gateway's host, any free port, with the gateway's certificate: every plane shares this host.
    direct = default("blob.direct_reads.enabled", str(settings.blob.backend == "filesystem").lower())
    direct_listen = default("blob.direct_reads.listen", f"{host}:0")
    tls = settings.gateway.tls
    if direct.lower() == "true" and tls.cert_file is not None:
        default("blob.direct_reads.cert_file", str(tls.cert_file))
        default("blob.direct_reads.key_file", str(tls.key_file or tls.cert_file))
    listens = [Listen(metadata_listen, "the metadata plane's gRPC address",
                      "set LADING_METADATA__LISTEN (metadata.listen) or use another --data-dir"),
               Listen(blob_listen, "the blob plane's gRPC address",
                      "set LADING_BLOB__LISTEN (blob.listen) or use another --data-dir")]
    if direct.lower() == "true":
        listens.append(Listen(direct_listen, "the blob direct-read server", "choose another with "
                              "LADING_BLOB__DIRECT_READS__LISTEN (blob.direct_reads.listen; port 0: any free port)"))
    return ServePlan(
        data_dir=root,
        host=host,
        port=port,
        metadata_target=metadata_target,
        blob_target=blob_target,
        env=env,
        scheme="https" if settings.gateway.tls.cert_file is not None else "http",
        listens=tuple(listens),
    )


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the supervisor dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class ChildDied(Exception):
    def __init__(self, name: str, returncode: int | None) -> None:
        super().__init__(f"the {name} plane exited unexpectedly with status {returncode}")
        self.name = name
        self.returncode = returncode


@dataclass
class _Child:
    name: str
    process: asyncio.subprocess.Process
    exited: asyncio.Task[int]


class Supervisor:
    """Starts, watches and stops the three planes of `lading serve` (see the module docstring)."""

    def __init__(self, plan: ServePlan, *, python: str = sys.executable, out: Any = None) -> None:
        self.plan = plan
        self.python = python
        self.out = out if out is not None else sys.stdout
        self.children: list[_Child] = []
        self._stop = asyncio.Event()
        self._gateway_sockets: list[Any] = []

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Runs until a signal (exit 0) or a child's death / failed start (exit 1); exit 2 when
        the run folder cannot be made private."""
        # Listeners first: a port or socket that another process holds stops everything before
        # anything is created.
        try:
            self._claim_listeners()
        except ListenUnavailable as refused:
            print(f"lading serve: {refused}", file=sys.stderr, flush=True)
            return LISTEN_UNAVAILABLE_EXIT
        try:
            # The data folder is Lading's own: owner only (private_files.py). The planes trust
            # callers on their unix sockets (grpc_access.trust_unix_socket_peers): only this user
            # may reach them.
            make_private_folder(self.plan.data_dir, tighten=True)
            ensure_private_folder(self.plan.data_dir / "run")
        except (UnsafeFolder, PermissionError) as unsafe:
            print(f"lading serve: {unsafe}", file=sys.stderr, flush=True)
            close_all(self._gateway_sockets)
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        env = {**os.environ, **self.plan.env}
        env["LADING_GATEWAY__LISTEN_FDS"] = json.dumps([sock.fileno() for sock in self._gateway_sockets])
        write_record(self.plan.data_dir, metadata_target=self.plan.metadata_target,
                     blob_target=self.plan.blob_target,
                     url=f"{self.plan.scheme}://{_url_host(self.plan.host)}:{self.plan.port}")
        try:
            await self._spawn("metadata", "services.metadata", env)
            await self._spawn("blob", "services.blob", env)
            if not await self._race(
                asyncio.gather(_wait_serving(self.plan.metadata_target), _wait_serving(self.plan.blob_target))
            ):
                return 0
            await self._spawn("gateway", "gateway", env)
            if not await self._race(_wait_http(self.plan.host, self.plan.port, tls=self.plan.scheme == "https")):
                return 0
            print(
                f"Lading is serving on {self.plan.scheme}://{_url_host(self.plan.host)}:{self.plan.port}",
                file=self.out,
                flush=True,
            )
            await self._race(asyncio.Event().wait())  # until a signal or a death
            return 0
        except ChildDied as died:
            print(f"lading: {died}; stopping the other planes", file=sys.stderr, flush=True)
            return 1
        except TimeoutError as timeout:
            print(f"lading: {timeout}; stopping", file=sys.stderr, flush=True)
            return 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            close_all(self._gateway_sockets)
            await self.stop_all()
            remove_record(self.plan.data_dir)

    def _claim_listeners(self) -> None:
        """Binds the registry port (kept, for the gateway child) and checks the other listen
        addresses. Raises ListenUnavailable before anything was started."""
        for listen in self.plan.listens:
            check_free(listen)
        self._gateway_sockets = bind_gateway(
            self.plan.host, self.plan.port,
            "stop that process, or choose another port with --port or LADING_GATEWAY__PORT (gateway.port)")

    async def _spawn(self, name: str, module: str, env: Mapping[str, str]) -> None:
        # Only the gateway inherits the registry port; once it has, the supervisor lets go of its
        # copy, so a connection to the port reaches the gateway child or nobody.
        inherited = [sock.fileno() for sock in self._gateway_sockets] if name == "gateway" else []
        if name != "gateway":
            env = {key: value for key, value in env.items() if key != "LADING_GATEWAY__LISTEN_FDS"}
        process = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            module,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            process_group=0,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            pass_fds=inherited,
        )
        self.children.append(_Child(name, process, asyncio.ensure_future(process.wait())))
        if inherited:
            close_all(self._gateway_sockets)
            self._gateway_sockets = []

    async def _race(self, work: Awaitable[Any]) -> bool:
        """Awaits `work`; False if a stop was requested first. Raises ChildDied if a child exits."""
        work_task = asyncio.ensure_future(work)
        stop_task = asyncio.ensure_future(self._stop.wait())
        watched = {child.exited: child for child in self.children}
        try:
            done, _ = await asyncio.wait(
                {work_task, stop_task, *watched}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (work_task, stop_task):
                if not task.done():
                    task.cancel()
        for task, child in watched.items():
            if task in done:
                raise ChildDied(child.name, child.process.returncode)
        if stop_task in done:
            return False
        work_task.result()  # re-raise its failure (e.g. TimeoutError)
        return True

    async def stop_all(self) -> None:
        """SIGTERM each live child in the written order (gateway, blob, metadata) and wait for it."""
        order = {"gateway": 0, "blob": 1, "metadata": 2}
        for child in sorted(self.children, key=lambda c: order.get(c.name, 99)):
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(child.exited), STOP_GRACE_SECONDS)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        child.process.kill()
                    await child.exited
            elif not child.exited.done():
                await child.exited


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _probe_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


async def _wait_serving(target: str, within_seconds: float = START_TIMEOUT_SECONDS) -> None:
    """Polls grpc.health.v1 on `target` until it reports SERVING. TimeoutError after `within_seconds`."""
    request = health_pb2.HealthCheckRequest(service="")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            async with asyncio.timeout(within_seconds):
                while True:
                    try:
                        reply = await stub.Check(request, timeout=1.0)
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            return
                    except grpc.RpcError:
                        pass  # not listening yet
                    await asyncio.sleep(_POLL_SECONDS)
        except TimeoutError:
            raise TimeoutError(f"{target} did not report SERVING within {within_seconds:.0f}s") from None


async def _wait_http(host: str, port: int, within_seconds: float = START_TIMEOUT_SECONDS, *,
                     tls: bool = False) -> None:
    """Polls `GET /v2/` (over TLS with `tls`) until it answers 200, or 401 when auth is on.
    TimeoutError after `within_seconds`."""
    try:
        async with asyncio.timeout(within_seconds):
            await _poll_http(host, port, _probe_tls_context() if tls else None)
    except TimeoutError:
        raise TimeoutError(
            f"the gateway did not answer GET /v2/ on {host}:{port} within {within_seconds:.0f}s"
        ) from None


def _probe_tls_context() -> ssl.SSLContext:
    """TLS for the start-up probe of our own child on a local address: the certificate is for
    the public name, not for the probed address, and clients check it, not this probe."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _poll_http(host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
    while True:
        with contextlib.suppress(OSError):  # ssl.SSLError is one: a handshake before TLS is up
            reader, writer = await asyncio.open_connection(_probe_host(host), port, ssl=tls)
            try:
                writer.write(
                    f"GET /v2/ HTTP/1.1\r\nHost: {_url_host(host)}:{port}\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            # 401: auth is on and the probe is anonymous; the gateway answered, so it is up.
            if status_line.split(b" ")[1:2] in ([b"200"], [b"401"]):
                return
        await asyncio.sleep(_POLL_SECONDS)


def serve(*, data_dir: str | None = None, host: str | None = None, port: int | None = None) -> int:
    """`lading serve`: returns the process exit status."""
    plan = plan_serve(load_settings(), os.environ, data_dir=data_dir, host=host, port=port)
    # Everything this process and the planes create is owner only, whatever the shell's umask.
    restrict_new_files()
    return asyncio.run(Supervisor(plan).run())
