"""`lading serve`: the embedded registry, three planes as three processes on one machine.

The metadata plane runs inside this process (`services/metadata/main.serve`, driven through a
`PlaneControl`), beside the supervision below; the blob plane and the gateway are its children,
forked once the settings are read (`fork_plane`: they run their plane's own `main()` without
loading Python and the settings again) and named `lading-blob` and `lading-gateway` in ps/top.
Each plane keeps its own process (the Python code of the three shares no GIL that way: one process
for all three measured 30-60 % slower on request-heavy work, docs/benchmarks.md), its own settings
section, its own gRPC socket and health; the gateway reaches the other two over gRPC on their
sockets. Hosting one plane here spares a fourth interpreter that would hold the settings, grpc and
asyncio again (~55 MiB resident) and load them again at every start.

Layout under the data folder (default `./data`):
    registry.db        SQLite database of the metadata plane
    blobs/             filesystem root of the blob plane
    run/               the planes' sockets: 0700 whatever the umask (an existing one of ours is
                       narrowed to 0700, one of another user refused), sockets 0600: callers
                       there are trusted with every role (grpc_access.trust_unix_socket_peers)
    run/metadata.sock  gRPC unix socket of the metadata plane
    run/blob.sock      gRPC unix socket of the blob plane
Blob GETs answer 307 to the blob plane's direct-read server (sendfile; a free port on the
gateway's host, `blob.direct_reads.listen` to pin it), so pulled bytes skip gRPC; on S3 it serves
only the pull-through cache's cold fetches (stored blobs redirect to S3's presigned URLs).

Settings reach the planes as LADING_* environment variables (the children's environment; the
metadata plane here reads the same values as overrides, `settings_overrides`). The supervisor only fills in what
the user has not set (in the environment or LADING_CONFIG_FILE), so e.g.
`LADING_METADATA__DATABASE_URL=postgresql+asyncpg://...` points the embedded stack at PostgreSQL;
the `--host`/`--port`/`--data-dir` flags, when given, win.

Lifecycle (written order):
  claim:  bind the registry port (a port another process holds stops here, exit 2, naming the port
          and `--port` / LADING_GATEWAY__PORT) and check the planes' other listen addresses
          (services/serve_listeners.py); record the planes' targets in `run/serve.json` for the
          operator commands (services/common/serve_record.py; removed on stop).
  start:  the three planes at once, so their imports overlap: blob and gateway as children (forked
          before this process loads grpc or runs an event loop), the metadata plane here. The gateway inherits the bound port (`gateway.listen_fds`; the
          supervisor closes its copy) and a start gate (`gateway.start_gate_fd`, a pipe): it
          accepts nothing until the supervisor opens the gate, once metadata and blob report
          grpc.health SERVING. Then wait until GET /v2/ answers (200, or 401 with auth on): only
          the gateway child can answer on that socket → print "Lading is serving on
          http://HOST:PORT" (https:// when `gateway.tls.cert_file` is set: the gateway child
          reads the same settings and serves HTTPS itself; the probe then speaks TLS without
          checking the certificate, as it only asks whether its own child is up).
  stop:   on SIGINT/SIGTERM, or when any plane stops on its own: SIGTERM to the gateway, then the
          blob plane, each waited for (its own stop bound plus `serve.stop_margin_seconds`, then
          SIGKILL to its whole process group, the gateway's workers with it), then the metadata plane
          here (health NOT_SERVING, calls drain, the database closes). A plane that stopped on its
          own makes the exit status non-zero.
Children run in their own process group (so a terminal's Ctrl-C reaches only the supervisor,
which then stops them in order) and, on Linux, are told to exit if the supervisor itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.parent_death import die_with_parent
from services.common.paths import UnsafeFolder, ensure_private_folder
from services.common.plane_control import PlaneControl
from services.common.private_files import DISK_FULL_ERRNOS, make_private_folder, restrict_new_files
from services.common.serve_record import record_path, remove_record, write_record
from services.common.settings import Settings, is_user_set, load_settings
from services.serve_listeners import Listen, ListenUnavailable, bind_gateway, check_free, close_all

# How long the planes may take to come up. How long they may take to go down comes from the
# settings (`ServePlan.stop_within_seconds`).
START_TIMEOUT_SECONDS = 60.0
# Exit status when an address `lading serve` must listen on is taken (nothing was started).
LISTEN_UNAVAILABLE_EXIT = 2
# Start-up polls (plane health, GET /v2/): often enough that nobody waits on the poll.
_POLL_SECONDS = 0.02
# The health probe's channel retries a plane that is not listening yet at this pace (gRPC's own
# reconnect backoff starts at 1 s and grows: the start would wait on it, not on the plane).
_PROBE_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 20), ("grpc.min_reconnect_backoff_ms", 20),
                          ("grpc.max_reconnect_backoff_ms", 100)]
# The metadata plane run inside this process: settings and a control in, exit status out.
PlaneRunner = Callable[[PlaneControl], Awaitable[int]]


@dataclass(frozen=True)
class ServePlan:
    """What `lading serve` will run: resolved addresses and the env vars it adds for its children."""

    data_dir: Path
    host: str
    port: int
    metadata_target: str
    blob_target: str
    # Seconds each child plane ("gateway", "blob") gets from its SIGTERM to its exit before it is
    # killed with its process group: its own stop bound plus `serve.stop_margin_seconds`.
    stop_within_seconds: Mapping[str, float]
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
    default("blob.fetch_spool.folder", str(root / "fetch-spool"))
    # Limits both the gateway and the metadata plane enforce, each from its own section: one
    # registry, one value. A limit the user set on one plane only applies to both.
    for limit in ("max_manifest_bytes", "default_page_size", "max_page_size"):
        on_gateway, on_metadata = f"gateway.{limit}", f"metadata.{limit}"
        if _user_set(settings, on_gateway, environ) and not _user_set(settings, on_metadata, environ):
            default(on_metadata, str(getattr(settings.gateway, limit)))
        elif _user_set(settings, on_metadata, environ) and not _user_set(settings, on_gateway, environ):
            default(on_gateway, str(getattr(settings.metadata, limit)))
    if host is not None:
        env["LADING_GATEWAY__HOST"] = host
    else:
        host = settings.gateway.host
    if port is not None:
        env["LADING_GATEWAY__PORT"] = str(port)
    else:
        port = settings.gateway.port
    # Events name this node as Distribution does (`source.addr`: host name and the registry's port).
    if port:
        default("events.source_addr", f"{socket.gethostname()}:{port}")
    # Blob GETs redirect to the blob plane's own file server (sendfile, no gRPC hop) on the
    # gateway's host, any free port, with the gateway's certificate: every plane shares this host.
    # On S3 it serves the cold fetches of the pull-through cache (stored blobs: S3's own URLs).
    direct = default("blob.direct_reads.enabled", str(settings.blob.direct_reads_possible()).lower())
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
        stop_within_seconds=stop_within_seconds(settings),
        env=env,
        scheme="https" if settings.gateway.tls.cert_file is not None else "http",
        listens=tuple(listens),
    )


def stop_within_seconds(settings: Settings) -> dict[str, float]:
    """How long each child plane may take to stop before it is killed: its own bound, after
    which it has exited by itself (the gateway's drain + grace + cleanup, its workers killed; the
    blob plane's grace + cleanup) plus `serve.stop_margin_seconds`. Killing the gateway before its
    own bound left its workers, which it would have killed, running."""
    margin = settings.serve.stop_margin_seconds
    return {"gateway": settings.gateway.stop_bound_seconds + margin,
            "blob": settings.blob.stop_bound_seconds + margin}


def _set_process_name(name: str) -> None:
    """The name `ps`, `top` and /proc/<pid>/comm show (Linux, ≤ 15 bytes): a forked plane keeps
    its parent's command line, so this is what tells the planes apart."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_name = 15
        libc.prctl(pr_set_name, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


# What a forked child runs: the plane's own `main()`, as `python -m <module>` would.
_PLANE_MAINS = {"services.blob": "services.blob.main", "gateway": "gateway.main"}


def fork_plane(name: str, module: str, env: Mapping[str, str], *, close: list[int]) -> int:
    """Forks a child that runs the plane `module` (its `main()`) with `env` added to its
    environment; returns its pid. The child is as one started with `python -m <module>` (its own
    process group, told to exit if this process dies, stdin from /dev/null, no file descriptor of
    the supervisor's but those not in `close`), minus the start of a new interpreter and the
    import and validation of the settings, which it shares with this process (~0.25 s of every
    start). Call it before any event loop or thread exists."""
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setpgid(0, 0)
        if not die_with_parent(parent):  # the supervisor died before the request
            os._exit(1)
        if sys.platform.startswith("linux"):
            _set_process_name(f"lading-{name}")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in close:
            os.close(fd)
        with open(os.devnull, "rb") as devnull:
            os.dup2(devnull.fileno(), 0)
        os.environ.update(env)
        result = importlib.import_module(_PLANE_MAINS[module]).main()
        code = result if isinstance(result, int) else 0
    except SystemExit as stopped:
        code = stopped.code if isinstance(stopped.code, int) else (0 if stopped.code is None else 1)
    except KeyboardInterrupt:
        code = 0
    except BaseException:  # noqa: BLE001 - the child's last word, then it must not return into the parent's code
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class ChildDied(Exception):
    def __init__(self, name: str, returncode: int | None) -> None:
        super().__init__(f"the {name} plane exited unexpectedly with status {returncode}")
        self.name = name
        self.returncode = returncode


@dataclass
class _Child:
    """A child plane, by pid; `watch()` (in the event loop) reaps it when it exits."""

    name: str
    pid: int
    # When started with `python -m` (subprocess.Popen), kept so that it is not collected as a
    # still-running process; its returncode is filled in when this reaps the child.
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    returncode: int | None = None
    exited: asyncio.Future[int] = field(init=False, repr=False)

    def watch(self) -> None:
        if hasattr(self, "exited"):
            return
        loop = asyncio.get_running_loop()
        self.exited = loop.create_future()
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux (or the child is gone): look twice a second
            self._poll = asyncio.ensure_future(self._poll_exit())
            return

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._reap(os.waitpid(self.pid, 0)[1])

        loop.add_reader(pidfd, exited)

    async def _poll_exit(self) -> None:
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG: never waits
            if pid:
                self._reap(status)
                return
            await asyncio.sleep(0.5)

    def _reap(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        if self.popen is not None:
            self.popen.returncode = self.returncode
        if not self.exited.done():
            self.exited.set_result(self.returncode)

    def signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL to the child and to every process of its process group, which it leads (the
        gateway's uvicorn workers are there, and would outlive it, holding the registry port).
        Only while the child is not reaped: until then its pid, and so its group, is ours."""
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)


@dataclass
class _InProcess:
    """The plane that runs in the supervisor's own process (the metadata plane)."""

    name: str
    control: PlaneControl
    exited: asyncio.Task[int]


def settings_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """LADING_* variables (`LADING_BLOB__FILESYSTEM__ROOT=...`) as nested settings values
    (`{"blob": {"filesystem": {"root": ...}}}`), to give this process the settings its children
    get from their environment, without changing its own environment."""
    nested: dict[str, Any] = {}
    for name, value in env.items():
        *parents, leaf = name.removeprefix("LADING_").lower().split("__")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def metadata_plane(env: Mapping[str, str]) -> PlaneRunner:
    """The real metadata plane, on the settings of this process's environment plus `env` (the
    serve plan's LADING_* variables), as a child started with that environment would read them."""
    from services.metadata import main as metadata_main

    settings = load_settings(**settings_overrides(env))
    metadata_main.prepare_process(settings)
    return lambda control: metadata_main.serve(settings, control, freeze_start_up=True)


class Supervisor:
    """Starts, watches and stops the three planes of `lading serve` (see the module docstring).
    `metadata` runs the metadata plane in this process (`metadata_plane()` when None). The blob
    and gateway children are forked from this process (`python` None: they skip loading Python
    and the settings again) or, with `python`, started as `python -m <plane>` (the tests'
    stand-in planes)."""

    def __init__(self, plan: ServePlan, *, python: str | None = None, out: Any = None,
                 metadata: PlaneRunner | None = None) -> None:
        self.plan = plan
        self.python = python
        self.out = out if out is not None else sys.stdout
        self.children: list[_Child] = []
        self.metadata: _InProcess | None = None
        self._metadata_runner = metadata
        self._stop = asyncio.Event()
        self._gateway_sockets: list[Any] = []
        self._gate: int | None = None  # write end of the gateway's start gate
        self._prepared = False

    def request_stop(self) -> None:
        self._stop.set()

    def prepare(self) -> int | None:
        """Claims the listeners and makes the data folder private; the exit status to stop with
        (2, nothing was started) or None. Runs before any event loop: `launch` may fork."""
        self._prepared = True
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
        try:
            write_record(self.plan.data_dir, metadata_target=self.plan.metadata_target,
                         blob_target=self.plan.blob_target,
                         url=f"{self.plan.scheme}://{_url_host(self.plan.host)}:{self.plan.port}")
        except OSError as error:
            if error.errno not in DISK_FULL_ERRNOS:
                raise
            # A registry restarted on a full disk still serves pulls; the commands then find
            # the planes at their default sockets (README, "Where the commands find the registry").
            print(f"lading serve: the data folder's disk is full, {record_path(self.plan.data_dir)} "
                  "not written; pushes answer 507 until space is freed", file=sys.stderr, flush=True)
        return None

    def launch(self) -> None:
        """Starts the blob plane and the gateway (gated: see the module docstring). Outside an
        event loop when they are forked."""
        env = dict(self.plan.env)
        gate_read, self._gate = os.pipe()
        gateway_fds = [sock.fileno() for sock in self._gateway_sockets]
        gateway_env = {**env, "LADING_GATEWAY__LISTEN_FDS": json.dumps(gateway_fds),
                       "LADING_GATEWAY__START_GATE_FD": str(gate_read)}
        # Only the gateway keeps the registry port and its start gate; once it has them, the
        # supervisor lets go of its copies, so a connection to the port reaches the gateway child
        # or nobody.
        self._start_child("blob", "services.blob", env, keep=[])
        self._start_child("gateway", "gateway", gateway_env, keep=[*gateway_fds, gate_read])
        os.close(gate_read)
        close_all(self._gateway_sockets)
        self._gateway_sockets = []

    def _start_child(self, name: str, module: str, env: Mapping[str, str], keep: list[int]) -> None:
        if self.python is None:
            owned = [*(sock.fileno() for sock in self._gateway_sockets), self._gate]
            pid = fork_plane(name, module, env, close=[fd for fd in owned if fd is not None and fd not in keep])
            self.children.append(_Child(name, pid))
            return
        popen = subprocess.Popen(
            [self.python, "-m", module], env={**os.environ, **env}, stdin=subprocess.DEVNULL,
            process_group=0, pass_fds=keep,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.children.append(_Child(name, popen.pid, popen))

    async def run(self) -> int:
        """Runs until a signal (exit 0) or a plane's death / failed start (exit 1); exit 2 when a
        listen address is taken or the run folder cannot be made private."""
        if not self._prepared:
            refused = self.prepare()
            if refused is not None:
                return refused
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            if not self.children:
                self.launch()
            for child in self.children:
                child.watch()
            self._start_metadata()
            assert self.metadata is not None
            if not await self._race(asyncio.gather(self.metadata.control.serving.wait(),
                                                   _wait_serving(self.plan.blob_target))):
                return 0
            self._open_gate()
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
            self._close_gate()  # a gateway still waiting at its gate exits without serving
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

    def _start_metadata(self) -> None:
        runner = self._metadata_runner if self._metadata_runner is not None else metadata_plane(self.plan.env)
        control = PlaneControl()
        self.metadata = _InProcess("metadata", control, asyncio.ensure_future(runner(control)))

    def _open_gate(self) -> None:
        if self._gate is not None:
            os.write(self._gate, b"1")
            self._close_gate()

    def _close_gate(self) -> None:
        if self._gate is not None:
            os.close(self._gate)
            self._gate = None

    async def _race(self, work: Awaitable[Any]) -> bool:
        """Awaits `work`; False if a stop was requested first. Raises ChildDied if a child exits."""
        work_task = asyncio.ensure_future(work)
        stop_task = asyncio.ensure_future(self._stop.wait())
        watched: dict[asyncio.Task[int], _Child | _InProcess] = {child.exited: child for child in self.children}
        if self.metadata is not None:
            watched[self.metadata.exited] = self.metadata
        try:
            done, _ = await asyncio.wait(
                {work_task, stop_task, *watched}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled = [task for task in (work_task, stop_task) if not task.done()]
            for task in cancelled:
                task.cancel()
            # Collected, so that a gather cancelled half-way is not reported as a lost exception.
            await asyncio.gather(*cancelled, return_exceptions=True)
        for task, child in watched.items():
            if task in done:
                raise ChildDied(child.name, _status(task))
        if stop_task in done:
            return False
        work_task.result()  # re-raise its failure (e.g. TimeoutError)
        return True

    async def stop_all(self) -> None:
        """SIGTERM each live child in the written order (gateway, blob) and wait for it (its own
        stop bound plus a margin, `plan.stop_within_seconds`; then SIGKILL to its process group),
        then stop the metadata plane in this process and wait for it."""
        order = {"gateway": 0, "blob": 1}
        for child in sorted(self.children, key=lambda c: order.get(c.name, 99)):
            child.watch()
            if child.returncode is None:
                child.signal(signal.SIGTERM)
                within = self.plan.stop_within_seconds[child.name]
                try:
                    async with asyncio.timeout(within):
                        await asyncio.shield(child.exited)
                except TimeoutError:
                    print(f"lading: the {child.name} plane was still running {within:g} s after SIGTERM "
                          "(its own stop bound plus LADING_SERVE__STOP_MARGIN_SECONDS); killing it and its "
                          "process group (SIGKILL)", file=sys.stderr, flush=True)
                    child.kill()
            await child.exited
        if self.metadata is not None:
            self.metadata.control.stop.set()
            with contextlib.suppress(Exception):  # its failure was logged by the plane itself
                await self.metadata.exited


def _status(task: asyncio.Task[int]) -> int | None:
    """A finished plane's exit status (None when it was cancelled or raised)."""
    if task.cancelled() or task.exception() is not None:
        return None
    return task.result()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _probe_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


async def _wait_serving(target: str, within_seconds: float = START_TIMEOUT_SECONDS) -> None:
    """Polls grpc.health.v1 on `target` until it reports SERVING. TimeoutError after `within_seconds`."""
    # Here, not at the top: the children are started before this process loads grpc.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    request = health_pb2.HealthCheckRequest(service="")
    async with grpc.aio.insecure_channel(target, options=_PROBE_CHANNEL_OPTIONS) as channel:
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
    supervisor = Supervisor(plan)
    refused = supervisor.prepare()
    if refused is not None:
        return refused
    supervisor.launch()  # forks: before any event loop exists
    return asyncio.run(supervisor.run())
