"""The one settings object: environment variables with the `LADING_` prefix, an optional TOML file.

Nested sections use `__` in variable names, e.g. `LADING_BLOB__FILESYSTEM__ROOT=/srv/blobs`.
`LADING_CONFIG_FILE` points at a TOML file with the same structure (`[blob.filesystem] root = ...`);
environment variables win over the file. Every process builds its settings once, in its
composition root (`load_settings()`), and passes the pieces it needs down by constructor.

gRPC addresses use gRPC's own target syntax: `127.0.0.1:50051`, `dns:///metadata:50051`,
`unix:///path/to.sock` (absolute) or `unix:relative/path.sock`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MiB = 1024 * 1024


class GrpcTlsSettings(BaseModel):
    """TLS on the gRPC links between planes; one shape for both ends (see services/common/tls.py).

    A plane's server (`blob.tls`, `metadata.tls`): `cert_file` + `key_file` are its certificate
    chain and key; with `require_client_cert` (mutual TLS) clients must present a certificate
    signed by a CA in `ca_file` (without it, gRPC asks clients for no certificate at all, so
    callers can only identify by bearer token: `grpc_access`). The gateway's channels
    (`gateway.grpc.tls`): `ca_file` is the CA
    bundle that verifies the planes (None: the system's roots); `cert_file` + `key_file` are the
    client certificate for mutual TLS; `server_name_override` is the name checked against the
    planes' certificates when it differs from the target's host (e.g. a `unix:` target).
    """

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    require_client_cert: bool = False
    server_name_override: str = ""


class HttpTlsSettings(BaseModel):
    """HTTPS on the gateway: on when `cert_file` is set (PEM chain; `key_file` may be omitted when
    the key is in the same file). The files are re-read on SIGHUP and when their modification
    time changes (checked every `reload_check_seconds`; 0 checks only on SIGHUP); new connections
    get the new certificate, open ones keep theirs."""

    cert_file: Path | None = None
    key_file: Path | None = None
    reload_check_seconds: float = Field(default=5.0, ge=0)


class GrpcClientSettings(BaseModel):
    """How the gateway talks to a plane."""

    # Seconds a single unary call may take; streams get `stream_timeout_seconds`.
    timeout_seconds: float = 30.0
    stream_timeout_seconds: float = 3600.0
    # Idempotent reads are retried this many times on UNAVAILABLE.
    max_attempts: int = 3
    keepalive_seconds: int = 30
    # grpc's load-balancing policy across the addresses a `dns:///` target resolves to.
    lb_policy: str = "round_robin"
    # Longest wait between reconnection attempts to a replica that went away (gRPC's default: 120 s).
    max_reconnect_backoff_ms: int = 5000
    tls: GrpcTlsSettings = Field(default_factory=GrpcTlsSettings)
    # File holding the bearer token this client presents to the planes (first line; sent as
    # `authorization: Bearer ...` on every call): the role's token of `grpc_access` on the planes.
    # None: no token (identity by client certificate, or a trusted unix socket).
    token_file: Path | None = None


class CacheFeedSettings(BaseModel):
    """How a gateway keeps its manifest cache coherent with every other gateway (issue 15, item 5;
    gateway/cache_feed.py): it follows the repository changes of the metadata plane's change feed
    (ChangeService.WatchChanges) and drops what changed. While the stream is live, entries live
    `coherent_ttl_seconds`; while it is down, `gateway.manifest_cache_ttl_seconds` (the old bound),
    and the metric `lading_gateway_cache_feed_up` is 0."""

    enabled: bool = True
    # Lifetime of a cache entry while the stream is live (a change drops it sooner).
    coherent_ttl_seconds: float = Field(default=30.0, ge=0)
    # The metadata plane sends at least one message this often; with none for
    # `stale_after_seconds` the stream counts as down (and is subscribed again).
    heartbeat_seconds: float = Field(default=0.25, gt=0, le=10)
    stale_after_seconds: float = Field(default=1.0, gt=0)
    # Longest wait between two attempts to subscribe again.
    reconnect_max_seconds: float = Field(default=2.0, gt=0)


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 5000
    metadata_target: str = "unix:data/run/metadata.sock"
    blob_target: str = "unix:data/run/blob.sock"
    grpc: GrpcClientSettings = Field(default_factory=GrpcClientSettings)
    # The spec asks registries to accept manifests of at least 4 MiB; larger ones get 413.
    max_manifest_bytes: int = 4 * MiB
    # Bytes per gRPC message when streaming blob bodies (the blob plane accepts ≤ 4 MiB). A closing
    # PUT whose body fits in one message sends it inside CommitUpload. 4 MiB measured no faster
    # than 1 MiB on loopback and costs memory per concurrent push.
    chunk_bytes: int = 1 * MiB
    # Default and maximum page sizes for tags/list, _catalog and referrers.
    default_page_size: int = 1000
    max_page_size: int = 10000
    # Accept X-Forwarded-Proto/-Host from these client addresses ("*" for any).
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Manifest GET/HEAD answers are cached per (repository, reference) for this long (0: off).
    # A manifest deleted or a tag moved through ANOTHER gateway may be served here for up to this
    # long; writes through this gateway invalidate its own entries at once (gateway/manifest_cache.py).
    manifest_cache_ttl_seconds: float = Field(default=1.0, ge=0)
    manifest_cache_bytes: int = Field(default=32 * MiB, ge=0)
    manifest_cache_max_entry_bytes: int = Field(default=1 * MiB, ge=0)
    # Invalidation of the manifest cache by the change feed (coherent gateways; see the class).
    cache_feed: CacheFeedSettings = Field(default_factory=CacheFeedSettings)
    # uvicorn worker processes for this gateway.
    workers: int = 1
    log_level: str = "info"
    # On SIGTERM: /readyz answers 503 at once; after `shutdown_drain_seconds` (time for a load
    # balancer's health checks to notice) the gateway stops accepting connections, and in-flight
    # requests get `shutdown_grace_seconds` to finish before they are cancelled.
    shutdown_drain_seconds: float = Field(default=0.0, ge=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # After the grace period, the time to close the change streams and gRPC channels and flush
    # traces; a gateway still running then exits at once (status 1), whatever it waits on (a
    # peer that is gone), so a stop is bounded by drain + grace + this (`stop_bound_seconds`).
    shutdown_cleanup_seconds: float = Field(default=5.0, gt=0)
    tls: HttpTlsSettings = Field(default_factory=HttpTlsSettings)
    # Limits against abuse (gateway/limits.py, gateway/bodies.py):
    # bytes of a request's head (request line + headers) before it is refused with 431;
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    # seconds a client may leave a request body stalled between two reads before it is cut off
    # with 408 (0: never); an upload chunk cut off this way is not kept, its session is unchanged;
    body_read_timeout_seconds: float = Field(default=60.0, ge=0)
    # largest blob an upload may produce, checked against Content-Length and the bytes streamed
    # (413; the session is cancelled). 0: no limit.
    max_blob_bytes: int = Field(default=0, ge=0)
    # ranges one blob GET may ask for and get as `multipart/byteranges` (RFC 9110 section 14.2
    # lets a server ignore many small ranges): more, or ranges that overlap or are not in
    # ascending order, get the whole blob (200). 1024 is what zstd:chunked pulls send at most
    # (containers/storage's maxNumberMissingChunks).
    max_ranges: int = Field(default=1024, ge=1)
    # Connection guards (gateway/connections.py):
    # seconds from the first byte of a request to the end of its headers before the client gets
    # 408 and the connection is closed (0: never);
    header_timeout_seconds: float = Field(default=10.0, ge=0)
    # seconds a connection without a request under way (just opened, or between requests) stays open;
    keep_alive_timeout_seconds: float = Field(default=5.0, gt=0)
    # open connections one client address may hold; one more is answered 429 and closed (0: no
    # cap). Addresses in `trusted_proxies` are not capped: a proxy speaks for many clients.
    max_connections_per_client: int = Field(default=256, ge=0)
    # Seconds the gateway trusts its last answer about read-only maintenance mode before asking
    # the metadata plane again (uploads are refused with 405 while it is on); 0: ask every time.
    maintenance_check_seconds: float = Field(default=1.0, ge=0)
    # Already-listening sockets (file descriptors) to serve on instead of binding host:port:
    # `lading serve` binds the registry port itself and hands it over, so a port another process
    # holds fails before any plane starts and its readiness probe reaches only its own gateway.
    # `host` and `port` then only describe the address (for messages). Empty: bind host:port.
    listen_fds: list[int] = Field(default_factory=list)
    # An inherited pipe (file descriptor) the gateway reads one byte from before it accepts
    # connections; if the pipe closes first, it exits without serving. `lading serve` starts its
    # gateway beside the other planes (its imports overlap theirs) and opens the gate once they
    # report SERVING. None: accept at once.
    start_gate_fd: int | None = None

    @property
    def stop_bound_seconds(self) -> float:
        """The bound of the gateway's stop, from the stop signal to its exit: drain + grace +
        cleanup. A single process exits by itself at this bound; with `workers > 1` the gateway
        kills the workers still running then (gateway/workers.py) and exits."""
        return self.shutdown_drain_seconds + self.shutdown_grace_seconds + self.shutdown_cleanup_seconds


class FilesystemBackendSettings(BaseModel):
    root: Path = Path("data/blobs")
    # Free-space reserve: new blob bytes (pushes, upload sessions, pull-through fetches) are
    # refused with 507 STORAGE_FULL while they would leave less than this free on the disk of
    # `root`; reads, deletes, GC and cancels never are. The room is for what must still work
    # when blobs fill a disk they share with the embedded SQLite database: deletes and manifest
    # writes (a few pages of WAL), `lading maintenance`, and a restart, which creates SQLite's
    # -wal and -shm files before it can read anything. 256 MiB covers those many times over
    # (SQLite's WAL checkpoints at ~4 MiB) and is a sliver of any disk that holds images; a
    # percentage would keep gigabytes idle on large disks. 0: no reserve (a dedicated blob disk).
    # The pull-through cache's fetch spool (blob.fetch_spool.folder, with any backend, S3 too)
    # keeps the same reserve on its own folder's disk.
    min_free_bytes: int = Field(default=256 * MiB, ge=0)


class S3BackendSettings(BaseModel):
    """An S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW) for `backend = "s3"`."""

    # host[:port] of the S3 API, without scheme (`secure` picks https/http).
    endpoint: str = "s3.amazonaws.com"
    region: str = "us-east-1"
    # Required with backend = "s3".
    bucket: str = ""
    # Both empty: the standard credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    # MINIO_ACCESS_KEY/MINIO_SECRET_KEY, ~/.aws/credentials, then EC2/ECS/IRSA role credentials).
    access_key: str = ""
    secret_key: str = ""
    session_token: str = ""
    secure: bool = True
    # PEM bundle of CAs to trust for TLS; None uses SSL_CERT_FILE or certifi's bundle.
    ca_bundle: Path | None = None
    # True forces path-style URLs (http://host/bucket/key), False virtual-hosted ones
    # (http://bucket.host/key); None lets the SDK choose (virtual on AWS, path elsewhere).
    path_style: bool | None = None
    # Every key is stored under this prefix (e.g. "lading/"), so one bucket can hold other data.
    key_prefix: str = ""
    # Create the bucket at start-up when missing (else a missing bucket fails start-up).
    create_bucket: bool = False
    # Lifetime of presigned GET URLs handed to clients.
    presign_expiry_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    # Presigned URLs point here ("https://s3.example.com") when clients reach the bucket under
    # another address than the blob service does; empty uses `endpoint`.
    presign_endpoint: str = ""
    # The gateway answers blob GETs with a 307 to a presigned URL instead of streaming the bytes.
    redirect_reads: bool = True
    # The periodic purge also aborts multipart uploads under `key_prefix` started longer ago
    # than `upload_expiry_seconds` (their parts cost storage until aborted).
    purge_multipart_uploads: bool = True
    # Size of each part of a streamed multipart write (≥ 5 MiB, S3's minimum); a write holds at
    # most two parts in memory (one uploading, one filling), within `part_buffer_budget_bytes`.
    part_size_bytes: int = Field(default=16 * MiB, ge=5 * MiB, le=512 * MiB)
    # Bytes the blob process may hold in S3 part buffers, across all writes (a part reserves
    # its whole size before it fills and frees it once uploaded): more concurrent writes wait
    # for room instead of buffering. At least 2 × part_size_bytes lets a write fill one part
    # while the previous uploads; a part larger than the budget still proceeds, alone.
    part_buffer_budget_bytes: int = Field(default=32 * MiB, gt=0)
    # Parallel server-side part copies per compose.
    compose_concurrency: int = Field(default=4, ge=1, le=64)
    # A stopped or unreachable S3 answers UNAVAILABLE after these, instead of hanging.
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    max_retries: int = 3


class DirectReadSettings(BaseModel):
    """Blob GETs answered by the blob plane itself, from its files.

    With `enabled`, the gateway answers a blob GET with `307` to a signed URL of this small HTTP
    server, which sends the file with sendfile(2): the bytes never pass through Python or gRPC,
    the way presigned URLs work on S3. Clients must be able to reach `listen` (or `public_url`).
    With the S3 backend it serves the pull-through cache's cold fetches only (`fetches`), from
    their spool files (blob.fetch_spool) as the bytes arrive; reads of stored blobs keep
    redirecting to S3's presigned URLs (blob.s3.redirect_reads, which it needs, as it needs the
    spool). `lading serve` turns it on (on the gateway's host, a free port) unless set
    explicitly, on the filesystem and on S3 when those are there."""

    enabled: bool = False
    # host:port to listen on (port 0: any free port).
    listen: str = "0.0.0.0:5001"
    # Base URL clients use to reach `listen` ("https://blobs.example.com"); empty: the host the
    # client sent its blob GET to, on the port `listen` is bound to.
    public_url: str = ""
    # HMAC-SHA256 key signing the URLs; every blob replica behind one public URL needs the same.
    # Empty: a random key per process (fine for one replica; URLs die with the process).
    secret: SecretStr = SecretStr("")
    # How long a signed URL stays valid.
    url_lifetime_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    # Cold fetches of the pull-through cache are served here too, while they stream in from the
    # upstream (the bytes then skip gRPC and the gateway). The URL must reach the very process
    # that fetches, so this only applies without `public_url` (which may front several replicas).
    fetches: bool = True
    # HTTPS on the direct-read server (PEM chain and key); None: plain HTTP.
    cert_file: Path | None = None
    key_file: Path | None = None
    # Connection guards, as the gateway's (services/blob/direct_reads.py): seconds from the first
    # byte of a request to the end of its headers (then 408; 0: never); seconds a connection
    # without a request under way stays open (a head still arriving when they run out ends it
    # too); open connections per client address (one more is answered 429 and closed; 0: no cap).
    header_timeout_seconds: float = Field(default=10.0, ge=0)
    keep_alive_timeout_seconds: float = Field(default=5.0, gt=0)
    max_connections_per_client: int = Field(default=256, ge=0)


class FetchSpoolSettings(BaseModel):
    """Cold fetches of the pull-through cache on S3 (served by the direct-read server, or streamed
    through gRPC; the filesystem without direct reads streams too): the bytes go to the client at
    the upstream's pace and are released whole once their digest checks out; storage follows from
    a spool file in `folder` (unlinked at once: nothing stays behind; the direct-read server sends
    from it too). `budget_bytes` caps the bytes spooled and not yet stored, across all
    fetches of the process; beyond it a fetch goes at storage's pace again. 0: no spool.
    The spool's writes keep the free-space reserve of `filesystem.min_free_bytes` on the spool
    folder's disk, on every backend (services/blob/fetch_room.py)."""

    folder: Path = Path("data/fetch-spool")
    budget_bytes: int = Field(default=1024 * MiB, ge=0)


class BlobSettings(BaseModel):
    listen: str = "unix:data/run/blob.sock"
    backend: Literal["filesystem", "memory", "s3"] = "filesystem"
    filesystem: FilesystemBackendSettings = Field(default_factory=FilesystemBackendSettings)
    s3: S3BackendSettings = Field(default_factory=S3BackendSettings)
    # Upload sessions untouched for longer than this are purged.
    upload_expiry_seconds: int = 24 * 3600
    # How often the service purges expired sessions; 0 disables the background purge.
    purge_interval_seconds: int = 3600
    # Bounded pool for blocking storage calls (file I/O, the S3 SDK).
    io_threads: int = 16
    # On SIGTERM: health NOT_SERVING, then in-flight calls get this long to finish.
    shutdown_grace_seconds: float = 10.0
    # After the grace, the time to stop the purge task, close the backend (its I/O threads finish
    # the call they are in) and the clients, and flush traces; a blob plane still running then
    # exits at once (status 1), saying what it cut short, so a stop is bounded by grace + this
    # (`stop_bound_seconds`).
    shutdown_cleanup_seconds: float = Field(default=5.0, gt=0)
    tls: GrpcTlsSettings = Field(default_factory=GrpcTlsSettings)
    # host:port of a second, plaintext listener that serves grpc.health.v1 and nothing else, for
    # probes that cannot speak TLS (Kubernetes gRPC probes); empty: none.
    health_listen: str = ""
    # Open upload sessions one owner may hold (the gateway names the owner: the account when auth
    # is on, else the client's address); one more is refused with 429 until one is committed,
    # cancelled or purged. 0: no limit.
    max_upload_sessions_per_owner: int = Field(default=1000, ge=0)
    direct_reads: DirectReadSettings = Field(default_factory=DirectReadSettings)
    fetch_spool: FetchSpoolSettings = Field(default_factory=FetchSpoolSettings)
    # Logging of the blob plane (each plane reads only its own section).
    log_level: str = "info"

    @property
    def stop_bound_seconds(self) -> float:
        """The bound of the blob plane's stop, from the stop signal to its exit: grace + cleanup
        (services/blob/main.py)."""
        return self.shutdown_grace_seconds + self.shutdown_cleanup_seconds

    def direct_reads_fetches_only_lack(self) -> str:
        """What `direct_reads` lacks to serve cold fetches without local files, i.e. on S3 ("":
        nothing): the fetch spool (the file it serves from), S3's presigned reads (where a reader
        that comes after its fetch goes), and URLs that reach this very process (`fetches` on, no
        `public_url`)."""
        missing = []
        if not self.fetch_spool.budget_bytes:
            missing.append("a fetch spool (blob.fetch_spool.budget_bytes above 0)")
        if self.backend != "s3" or not self.s3.redirect_reads:
            missing.append("S3 with presigned reads (blob.s3.redirect_reads)")
        if not self.direct_reads.fetches or self.direct_reads.public_url:
            missing.append("blob.direct_reads.fetches on and no blob.direct_reads.public_url")
        return " and ".join(missing)

    def direct_reads_possible(self) -> bool:
        """Whether `direct_reads.enabled` works with these settings (`lading serve` turns it on
        then): always on the filesystem, on S3 when `direct_reads_fetches_only_lack` is empty."""
        return self.backend == "filesystem" or (self.backend == "s3" and not self.direct_reads_fetches_only_lack())


class ChangeFeedSettings(BaseModel):
    """The metadata plane's change feed (services/metadata/changes, ChangeService.WatchChanges).

    Changes are rows with an increasing position; a replica learns of rows committed by another
    replica from PostgreSQL LISTEN/NOTIFY at once, and in any case by polling the newest position
    every `poll_seconds` (one indexed read per replica, whatever the number of subscribers)."""

    poll_seconds: float = Field(default=1.0, gt=0)
    # Changes older than this are deleted (a subscriber further behind rebuilds from what is
    # kept). At least the longest token lifetime (24 h) plus leeway, so every token that a change
    # revoked has expired before the change is forgotten.
    retention_seconds: float = Field(default=2 * 86400.0, ge=86400.0 + 300)
    # Seconds between deletions of expired changes.
    prune_interval_seconds: float = Field(default=600.0, gt=0)
    # Read-your-writes through every gateway's manifest cache (issue 15; changes/acks.py): a tag
    # or manifest write answers only once every gateway that holds a coherence lease has
    # acknowledged that it applied the write's change. A gateway that has not acknowledged within
    # `ack_wait_seconds` gets no more lease renewals until it has, and the write answers once its
    # lease ran out (at most `lease_seconds` later): a write waits at most
    # `ack_wait_seconds + lease_seconds`; a gateway that died stalls writes at most `lease_seconds`
    # after its last acknowledgement, once. A gateway without a lease serves its cache with the
    # short TTL (`gateway.manifest_cache_ttl_seconds`). False: writes do not wait (a read through
    # another gateway right after a write may see the previous tag for a few milliseconds).
    wait_for_caches: bool = True
    ack_wait_seconds: float = Field(default=0.5, ge=0)
    # Gateways renew their lease at least four times per lease (and with every change applied).
    lease_seconds: float = Field(default=1.0, gt=0, le=60)


class ReadYourWritesSettings(BaseModel):
    """Read-your-writes with a hot standby as `metadata.read_replica_url` (issue 15, item 4;
    services/metadata/store/replay.py): after each write the metadata plane waits until the standby
    has replayed it, at most `wait_seconds`, before it answers; past that bound it reads the
    written repository from the primary until the standby has caught up. PostgreSQL only."""

    enabled: bool = True
    wait_seconds: float = Field(default=1.0, ge=0)
    # First pause between two questions to the standby (doubles up to 20 ms).
    poll_seconds: float = Field(default=0.001, gt=0)


class MetadataSettings(BaseModel):
    listen: str = "unix:data/run/metadata.sock"
    database_url: str = "sqlite+aiosqlite:///data/registry.db"
    # Optional read replica (a PostgreSQL streaming replica, say): when set, the read-only calls
    # (GetManifest, StatBlob, ListTags, ListRepositories, ListReferrers) run on it and every
    # write on `database_url`. Same URL forms and pool settings as `database_url`. Replication
    # lag would show (a manifest just pushed answering 404 on the replica for a moment) but for
    # `read_your_writes`, which makes each write wait for the replica (PostgreSQL hot standby).
    read_replica_url: str | None = None
    read_your_writes: ReadYourWritesSettings = Field(default_factory=ReadYourWritesSettings)
    # Apply pending migrations at start-up (the embedded default); production runs `lading migrate`.
    auto_migrate: bool = True
    pool_size: int = 10
    max_overflow: int = 10
    # Seconds a statement may run (PostgreSQL) / wait for a lock (SQLite busy timeout).
    statement_timeout_seconds: float = 30.0
    shutdown_grace_seconds: float = 10.0
    tls: GrpcTlsSettings = Field(default_factory=GrpcTlsSettings)
    # As `blob.health_listen`: a plaintext grpc.health.v1-only listener for probes; empty: none.
    health_listen: str = ""
    # SQLite only. True: a write is on the disk (the WAL fsynced, `synchronous=FULL`) before it is
    # acknowledged; concurrent writes share one fsync. False (`synchronous=NORMAL`): faster, and
    # still safe against a crash of the process, but an OS crash or power cut loses the last
    # acknowledged writes (the database itself stays consistent). See README "Durability".
    sqlite_durable_commits: bool = True
    change_feed: ChangeFeedSettings = Field(default_factory=ChangeFeedSettings)
    # The metadata plane's own limits (checked again here whoever the caller is; the gateway has
    # its own of the same names, and `lading serve` keeps the two equal): larger manifests are
    # refused (MANIFEST_TOO_LARGE), pages of tags, repositories and referrers hold
    # `default_page_size` entries when the caller names none and at most `max_page_size`.
    max_manifest_bytes: int = 4 * MiB
    default_page_size: int = 1000
    max_page_size: int = 10000
    # Manifests larger than this are hashed, parsed and validated in a worker thread, not on the
    # event loop: near the 4 MiB limit that is 10-100 ms of CPU, during which every other call of
    # this process would wait. Smaller ones stay on the loop, where they parse in less time than
    # the thread hop costs.
    manifest_parse_inline_max_bytes: int = Field(default=256 * 1024, ge=0)
    log_level: str = "info"


class RegionPeerSettings(BaseModel):
    """Another region, as this region's metadata plane reaches it."""

    name: str
    # gRPC target of that region's metadata plane (e.g. `dns:///metadata.eu.example:50051`).
    metadata_target: str
    # gRPC target of that region's blob plane, which this region's blob plane fetches blobs from
    # that its own storage lacks (fetch on miss between regions). Empty: not fetched from there.
    blob_target: str = ""


class RegionSettings(BaseModel):
    """Regions (issue 15; services/metadata/regions.py), read by the metadata plane. Empty `local`:
    one site, nothing of this applies.

    In the primary region (`local == primary`) the metadata plane writes to its PostgreSQL primary
    and tells callers the WAL position of each write. In a replica region its `database_url` is the
    region's hot standby (read-only): every write RPC (manifests, tags, blob links, deletes,
    accounts, grants, GC, maintenance, console sessions) is forwarded to the primary region's
    metadata plane, and answered once the local standby has replayed it (bounded by
    `metadata.read_your_writes.wait_seconds`). Cut off from the primary, reads go on and writes
    answer UNAVAILABLE (HTTP 503) naming the primary region. The forwarded call carries the
    caller's own `authorization`: the regions share their `grpc_access` credentials."""

    local: str = ""
    primary: str = ""
    peers: list[RegionPeerSettings] = Field(default_factory=list)
    # Deadline of a forwarded write (the primary's answer); past it the write answers UNAVAILABLE.
    forward_timeout_seconds: float = Field(default=10.0, gt=0)
    # A replica region whose standby does not answer (stopped, restarting): "none", its reads
    # answer UNAVAILABLE (HTTP 503) naming the region's standby; "primary", they are answered by
    # the primary region's metadata plane meanwhile (a cross-region round trip each; writes are
    # forwarded there anyway). Blob bytes are read from the region's own storage either way.
    read_failover: Literal["none", "primary"] = "none"
    # TLS towards the other regions' metadata and blob planes.
    tls: GrpcTlsSettings = Field(default_factory=GrpcTlsSettings)
    # Token (one line) the blob plane presents to the other regions' blob planes when it fetches a
    # blob from them (they must grant it the `metadata` role in their `grpc_access`). None: the
    # identity is the client certificate of `tls`, or a trusted unix socket.
    blob_token_file: Path | None = None
    # Deadline of one blob's fetch from another region's blob plane (the whole stream).
    blob_fetch_timeout_seconds: float = Field(default=600.0, gt=0)


class ExternalIssuerSettings(BaseModel):
    """A token issuer Lading trusts besides its own (an existing identity service)."""

    # The `iss` its tokens carry; empty: no external issuer.
    issuer: str = ""
    # The `aud` its tokens must carry; empty: `auth.service`.
    audience: str = ""
    # JWKS document (RFC 7517) with its public keys (RS256 or ES256, each with a `kid`).
    jwks_file: Path | None = None
    # ES256 signatures are accepted only in the canonical low-S form (a high S is the same
    # signature made malleable). Set this only for an issuer whose library cannot produce low-S.
    accept_high_s_signatures: bool = False


class RevocationFeedSettings(BaseModel):
    """How a gateway follows account revocations (gateway/auth/revocations.py): a stream from the
    metadata plane (ChangeService.WatchChanges), with heartbeats so a dead stream shows quickly."""

    # The metadata plane sends at least one message this often.
    heartbeat_seconds: float = Field(default=0.5, gt=0, le=10)
    # With no message for this long the feed counts as down: token and cached Basic checks then
    # ask the metadata plane (fail safe) until it is back. Keep heartbeat + stale under 2 s.
    stale_after_seconds: float = Field(default=1.5, gt=0)
    # While the feed is down, one account's state is asked at most this often (per gateway).
    degraded_check_seconds: float = Field(default=0.25, ge=0, le=1)
    # Longest wait between two attempts to subscribe again.
    reconnect_max_seconds: float = Field(default=2.0, gt=0)


class LoginThrottleSettings(BaseModel):
    """Throttling of password checks (`/token` and Basic credentials; gateway/auth/throttle.py).

    Failed logins are counted per (client address, account), per account and per client address
    (IPv6 per /64). Past each key's free failures, the key is blocked for `base_delay_seconds`,
    doubled with each further failure up to `max_delay_seconds`: attempts then get `429
    TOOMANYREQUESTS` with `Retry-After` and cost no bcrypt. Credentials this gateway verified in
    the last `trusted_credential_seconds` are never throttled and use the reserved bcrypt lane."""

    enabled: bool = True
    free_failures_per_address_account: int = Field(default=5, ge=1)
    free_failures_per_account: int = Field(default=20, ge=1)
    free_failures_per_address: int = Field(default=50, ge=1)
    base_delay_seconds: float = Field(default=1.0, gt=0)
    max_delay_seconds: float = Field(default=300.0, gt=0)
    # A key with no failure for this long starts again from zero.
    forget_after_seconds: float = Field(default=900.0, gt=0)
    # Password checks of not-yet-trusted credentials in flight at once, per address and per account.
    max_concurrent_per_address: int = Field(default=8, ge=1)
    max_concurrent_per_account: int = Field(default=4, ge=1)
    trusted_credential_seconds: float = Field(default=86400.0, ge=0)
    # A refused attempt is answered after this long (at most its Retry-After): a client that
    # ignores Retry-After and asks again at once gets one answer per connection and delay, not
    # thousands a second that would keep the gateway busy. 0: answer at once.
    refusal_delay_seconds: float = Field(default=1.0, ge=0, le=10)
    # Bound on the keys remembered (oldest forgotten first).
    max_tracked_keys: int = Field(default=100_000, ge=100)


class LdapSettings(BaseModel):
    """Accounts from an LDAP directory or Active Directory (services/metadata/accounts/directory.py).

    Checked by the metadata plane (the gateways never talk to the directory). A name that is not a
    local account or robot is looked up in the directory: either bound directly as
    `user_dn_template` with `{username}` filled in, or (search-then-bind) found under
    `user_base_dn` with `user_filter` by the service account `bind_dn`, then bound as. Groups come
    from the user entry's `member_of_attribute` or, with `group_search`, from a search under
    `group_base_dn` with `group_filter`; group DNs are mapped to grants and admin with
    `lading group map` (or the console). Off unless `url` is set."""

    # ldap://host:389 (with `start_tls`) or ldaps://host:636; empty: no directory.
    url: str = ""
    # Upgrade an ldap:// connection with StartTLS before binding.
    start_tls: bool = False
    # PEM bundle of CAs that sign the directory's certificate; None: the system's.
    ca_file: Path | None = None
    # Direct bind: e.g. "uid={username},ou=people,dc=example,dc=org" (AD: "{username}@example.org").
    user_dn_template: str = ""
    # Search-then-bind: the service account, and where and how users are found.
    bind_dn: str = ""
    bind_password: SecretStr = SecretStr("")
    bind_password_file: Path | None = None
    user_base_dn: str = ""
    # AD: "(sAMAccountName={username})".
    user_filter: str = "(uid={username})"
    # Group membership: the user entry's attribute, or a group search (needs the service account).
    member_of_attribute: str = "memberOf"
    group_search: bool = False
    group_base_dn: str = ""
    group_filter: str = "(|(member={user_dn})(uniqueMember={user_dn}))"
    # A successful bind (and the groups it read) counts this long: repeated logins within it cost
    # no directory round trip, and a user removed from the directory or a group loses access
    # within it (sessions and refresh tokens are checked again after it).
    cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    # Deadline of one directory conversation (connect, TLS, bind, searches).
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Directory conversations at once (each on a thread of its own); one is kept for users
    # verified before, as with the bcrypt lanes.
    max_concurrent_checks: int = Field(default=8, ge=1, le=64)


class OidcSettings(BaseModel):
    """Console sign-in with an OpenID Connect provider (authorization code flow with PKCE).

    The metadata plane fetches the discovery document and the JWKS, exchanges the code and checks
    the ID token (services/metadata/accounts/oidc.py); the gateway only redirects the browser.
    Off unless `issuer` is set."""

    # The provider's issuer URL; its discovery document is at <issuer>/.well-known/openid-configuration.
    issuer: str = ""
    client_id: str = ""
    # Empty (and no file): a public client (PKCE alone).
    client_secret: SecretStr = SecretStr("")
    client_secret_file: Path | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    # The claim that names the account, and the one listing its groups (a list or one string).
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    # Shown on the console's sign-in button.
    display_name: str = "single sign-on"
    # PEM bundle of CAs that sign the provider's certificate; None: the system's.
    ca_file: Path | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # The discovery document and the JWKS are fetched again after this long (and the JWKS at once
    # for an unknown key id).
    metadata_cache_seconds: float = Field(default=3600.0, ge=0)
    # Longest lifetime of a CLI secret (what OIDC users give docker/podman/skopeo as password);
    # also the default.
    cli_secret_max_seconds: int = Field(default=30 * 86400, ge=3600)


class AuthSettings(BaseModel):
    """Access control (docs: gateway/auth/__init__.py). Off by default (`mode = "none"`).

    - "basic": `Authorization: Basic` checked against the accounts in the metadata plane;
    - "token": the Docker token flow: the gateway answers 401 with a Bearer challenge pointing at
      `realm` (by default its own `/token` endpoint, which issues ES256 JWTs signed with
      `signing_key_file`), and accepts tokens signed by any key of its set.
    """

    mode: Literal["none", "basic", "token"] = "none"
    # Token endpoint URL in challenges; empty: this gateway's own `<scheme>://<host>/token`.
    realm: str = ""
    # The `service` of challenges and the `aud` of tokens.
    service: str = "lading"
    # The `iss` of the tokens this registry issues.
    issuer: str = "lading"
    # Lifetime of issued access tokens (clients need at least 60 s, per the token spec).
    token_lifetime_seconds: int = Field(default=300, ge=60, le=24 * 3600)
    # Lifetime of refresh tokens (`offline_token=true`, `access_type=offline`).
    refresh_token_lifetime_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    # Clock skew tolerated on exp/nbf/iat.
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    # ES256 private key (PEM, P-256): `lading auth keygen --out FILE`. Required to issue tokens.
    signing_key_file: Path | None = None
    # More public (or private) PEM keys whose tokens are accepted: the previous key during a rotation.
    verification_key_files: list[Path] = Field(default_factory=list)
    external: ExternalIssuerSettings = Field(default_factory=ExternalIssuerSettings)
    # Repository name patterns anyone may pull without credentials (`public/*`, `*`).
    anonymous_pull: list[str] = Field(default_factory=list)
    # `/v2/_catalog` then needs the `registry:catalog:*` scope (granted to admins only).
    require_catalog_scope: bool = False
    # Created as an admin at metadata start-up when absent (password from the setting or the file).
    bootstrap_admin: str = ""
    bootstrap_admin_password: str = ""
    bootstrap_admin_password_file: Path | None = None
    # HMAC key binding upload sessions to their account; every gateway replica needs the same.
    # Empty: derived from the signing key (token mode); required otherwise.
    upload_state_key: str = ""
    # Seconds a successful Basic credential check is remembered (bcrypt is slow by design).
    basic_cache_seconds: float = Field(default=10.0, ge=0)
    # bcrypt work factor for new hashes (tests lower it).
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    # The metadata plane's bcrypt threads. With two or more, one is kept for credentials a gateway
    # verified before, so failed guesses can never take every thread.
    password_check_workers: int = Field(default=2, ge=1, le=64)
    # Checks of not-yet-verified credentials waiting for a thread; more are refused (429).
    password_check_queue: int = Field(default=32, ge=1)
    throttle: LoginThrottleSettings = Field(default_factory=LoginThrottleSettings)
    revocation_feed: RevocationFeedSettings = Field(default_factory=RevocationFeedSettings)
    # Accounts from a directory and from single sign-on (both checked by the metadata plane).
    ldap: LdapSettings = Field(default_factory=LdapSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)


class ObservabilitySettings(BaseModel):
    """Tracing, metrics and log format of every process (services/common/telemetry.py, metrics.py,
    logs.py). Every process of one deployment reads the same section; names differ per process."""

    # OTLP/HTTP collector, e.g. "http://otel-collector:4318" (spans go to <endpoint>/v1/traces;
    # a URL already ending in /v1/traces is used as is). Empty: no tracing at all (nothing is
    # installed, so it costs nothing).
    otlp_endpoint: str = ""
    # Extra headers sent with every export (e.g. an API key of a hosted collector).
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    # Longest one export of spans may take, retries included: a collector that accepts and never
    # answers holds a process's stop (its last flush) about this long.
    otlp_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Each process reports `service.name` = "<prefix>-gateway" / "-metadata" / "-blob".
    service_name_prefix: str = "lading"
    # Fraction of new traces recorded (a traceparent from the client decides for its own trace).
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # "text" (human) or "json" (one object per line with trace_id, repository, digest, account).
    log_format: Literal["text", "json"] = "text"
    # The gateway ALSO answers GET /metrics (Prometheus text format) on its public HTTP port.
    # Off by default: metrics are internal; serve them on `gateway_metrics_listen` instead.
    gateway_metrics: bool = False
    # host:port where the gateway / metadata / blob service serves GET /metrics; empty: off.
    gateway_metrics_listen: str = ""
    metadata_metrics_listen: str = ""
    blob_metrics_listen: str = ""
    # Seconds between refreshes of the metadata service's queue gauges (GC review queues, event
    # outbox): counted by a background task with a few COUNT queries, never on the scrape itself.
    queue_metrics_interval_seconds: float = Field(default=15.0, gt=0)


class GcSettings(BaseModel):
    """Online garbage collection (services/metadata/gc)."""

    # Something that stops being referenced (a tag, manifest, link) is not collected before this.
    review_delay_seconds: float = 86400.0
    # Seconds between runs of the collector inside the metadata service; 0 = off (run `lading gc`).
    interval_seconds: float = 0.0
    # Untagged manifests nothing references are deleted only when this is true.
    delete_untagged_manifests: bool = False
    # gRPC target of the blob plane, used by the metadata plane to confirm a new blob's bytes
    # before its first link (and by `lading gc`); "" skips that check (`lading serve` sets it).
    blob_target: str = ""
    # A run also deletes orphan bytes (blobs stored on the blob plane with no `blobs` row: an
    # upload committed whose link never happened), but only once they are older than this, so
    # bytes committed a moment ago whose LinkBlob is still on its way are never taken.
    orphan_grace_seconds: float = Field(default=3600.0, ge=0)
    # TLS of the metadata plane's channel to `blob_target` (client side, same shape as
    # `gateway.grpc.tls`): needed when the blob plane serves TLS (`blob.tls`).
    blob_tls: GrpcTlsSettings = Field(default_factory=GrpcTlsSettings)
    # File holding the bearer token of the `metadata` role (grpc_access.metadata on the blob
    # plane), presented on that channel; None: none (a client certificate in `blob_tls`, or a
    # trusted unix socket).
    blob_token_file: Path | None = None


class EventEndpointSettings(BaseModel):
    """One HTTP endpoint that receives event notifications (Distribution's envelope format)."""

    name: str = Field(min_length=1, max_length=128)
    url: str
    # Sent with every POST (e.g. Authorization).
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=5.0, gt=0)
    # After this many failed POSTs an event is dead-lettered (`lading events replay` revives it).
    max_attempts: int = Field(default=10, ge=1)
    # Retry n waits min(backoff_cap_seconds, backoff_base_seconds * 2**(n-1)).
    backoff_base_seconds: float = Field(default=1.0, ge=0)
    backoff_cap_seconds: float = Field(default=300.0, ge=0)
    # The envelope's Content-Type: "v1" (application/vnd.docker.distribution.events.v1+json, what
    # Distribution 2.x sends) or "v2" (...events.v2+json, the notification spec's and Distribution
    # 3's). The body is the same; receivers that check the type expect their registry's.
    envelope_version: Literal["v1", "v2"] = "v1"
    # Filters, checked when the event is written: empty include = everything. Events without a
    # media type (deletes) pass media-type filters. Actions: push, pull, mount, delete; and "audit"
    # (the audit log, services/metadata/policies/audit.py), sent only where include_actions names it.
    include_media_types: list[str] = Field(default_factory=list)
    exclude_media_types: list[str] = Field(default_factory=list)
    include_actions: list[str] = Field(default_factory=list)
    exclude_actions: list[str] = Field(default_factory=list)


class EventsSettings(BaseModel):
    """Durable event notifications (services/metadata/events): an outbox table written in the
    same transaction as each change, delivered at least once by the metadata service."""

    endpoints: list[EventEndpointSettings] = Field(default_factory=list)
    # Pull events (manifest and blob GETs) are the hot path: "off" (default) or "sampled" at pull_sample_rate.
    pull: Literal["off", "sampled"] = "off"
    pull_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    # Run the delivery worker in this metadata process (every replica may; rows are claimed).
    deliver: bool = True
    # Seconds between polls of the outbox when it was empty.
    delivery_interval_seconds: float = Field(default=1.0, gt=0)
    # Events per POST.
    batch_size: int = Field(default=100, ge=1, le=10000)
    # A claimed batch is retried by another worker after this long if its worker died.
    lease_seconds: float = Field(default=60.0, gt=0)
    # Delivered rows are deleted after this long; 0 keeps them.
    delivered_retention_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    # `source.addr` of events; "" = this host's name.
    source_addr: str = ""
    # Where deliveries may go (services/metadata/events/destinations.py): networks ("10.0.0.0/8",
    # "192.0.2.7") and host names ("hooks.example.com", "*.example.com"). Empty: anywhere but
    # link-local and cloud metadata addresses, which are refused unless a network listed here
    # contains them. Checked against the addresses a name resolves to, at every attempt.
    allowed_destinations: list[str] = Field(default_factory=list)


class RoleCredentials(BaseModel):
    """Who holds one role on the planes' gRPC listeners (services/common/access.py)."""

    # Client certificates that hold the role, by name: a certificate's subject common name, any
    # of its subject alternative names (DNS name, URI such as a SPIFFE ID, e-mail, IP address) or
    # its whole subject as OpenSSL prints it (`CN=lading-gateway,O=Example`). Needs mutual TLS on
    # the listener (`<plane>.tls.require_client_cert`), with a CA that signs only your planes'
    # and operators' certificates: any name it signs is believed.
    certificate_names: list[str] = Field(default_factory=list)
    # File with the role's bearer token(s), one per line (two during a rotation); callers send
    # `authorization: Bearer <token>`. Read at start-up. Make tokens long and random
    # (`openssl rand -hex 32`); over plaintext TCP they are only as safe as the network.
    token_file: Path | None = None


class GrpcAccessSettings(BaseModel):
    """Who may call the gRPC planes (both read this section; services/common/access.py has the
    method → role table). Roles: `gateway` (the data calls), `operator` (the `lading` admin
    commands: accounts, GC, repositories, events), `metadata` (the metadata plane calling the blob
    plane: byte checks and GC)."""

    gateway: RoleCredentials = Field(default_factory=RoleCredentials)
    operator: RoleCredentials = Field(default_factory=RoleCredentials)
    metadata: RoleCredentials = Field(default_factory=RoleCredentials)
    # Callers on a unix socket get every role: Lading creates its sockets 0600 (in a 0700 folder
    # for `lading serve`), so only its own user and root can connect, and they can read the data
    # folder anyway. False: they need credentials like anyone else.
    trust_unix_socket_peers: bool = True
    # DANGEROUS: every caller gets every role, with no credentials. A plane on a TCP address with
    # no way to identify callers refuses to start unless this is true; only for a network that
    # nothing else can reach.
    allow_unauthenticated: bool = False


class OperatorSettings(BaseModel):
    """How the operator commands (`lading user|robot|grant|gc|repo|tag|manifest|blob|check|
    maintenance|events`) identify themselves to the planes (services/cli_channels.py)."""

    # File holding a token of the `operator` role (grpc_access.operator.token_file on the planes).
    token_file: Path | None = None
    # TLS of the commands' channels: with `enabled`, this (a client certificate named in
    # grpc_access.operator.certificate_names for mutual TLS); otherwise `gateway.grpc.tls`.
    tls: GrpcTlsSettings = Field(default_factory=GrpcTlsSettings)


class ConsoleSettings(BaseModel):
    """The web console under /ui/ on the registry's port (gateway/console). Sessions live in the
    metadata plane (services/metadata/console), so every gateway replica serves every session."""

    enabled: bool = True
    # A session ends this long after sign-in, or after `idle_seconds` without a page.
    session_seconds: float = Field(default=8 * 3600.0, ge=60)
    idle_seconds: float = Field(default=3600.0, ge=60)
    # Rows per page of the repository and tag lists.
    page_size: int = Field(default=50, ge=1, le=1000)
    # The OIDC callback URL given to the provider: <public_url>/ui/oidc/callback; empty: the
    # scheme and host the browser used (X-Forwarded-* from a trusted proxy included).
    public_url: str = ""


class RegistryAccessSettings(BaseModel):
    """How Lading reaches another registry over HTTP (a pull-through upstream, a replication target)."""

    # Shown in errors, metrics and status commands.
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    # The registry's base URL: "https://registry-1.docker.io", "http://127.0.0.1:5001".
    url: str = Field(pattern=r"^https?://[^/?#]+/?$")
    # Credentials: Basic on a Basic challenge, and for the registry's token endpoint on a Bearer
    # challenge (empty username: anonymous tokens). The password is read from `password_file`
    # (first line) when set; it never reaches clients or logs.
    username: str = ""
    password: SecretStr = SecretStr("")
    password_file: Path | None = None
    # PEM bundle of CAs that sign the registry's certificate (and its token endpoint's); None:
    # the system's.
    ca_file: Path | None = None
    # Requests in flight at once to this registry, per process.
    max_concurrent_requests: int = Field(default=16, ge=1, le=1024)
    # Seconds to connect and between two reads of its answers.
    timeout_seconds: float = Field(default=30.0, gt=0)

    def secret(self) -> str:
        """The password (from `password_file` when set)."""
        if self.password_file is not None:
            lines = self.password_file.read_text().splitlines()
            return lines[0].strip() if lines else ""
        return self.password.get_secret_value()


class ProxyUpstreamSettings(RegistryAccessSettings):
    """One upstream registry served through the pull-through cache (`[[proxy.upstreams]]`).

    Local repositories named `<prefix><remote>` are pulled from `<url>/v2/<remote>/...` on a miss
    (services/common/upstream.py talks to it; the metadata plane caches manifests, the blob plane
    blobs). Pushes into the prefix are refused (405 UNSUPPORTED)."""

    # Local repository prefix it serves, ending in "/": "docker.io/" makes
    # `docker.io/library/alpine` the upstream's `library/alpine`.
    prefix: str = Field(min_length=2, pattern=r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*/$")
    # Docker Hub's rule: a one-component name (`docker.io/alpine`) is `library/alpine` upstream.
    docker_hub_library: bool = False
    # Upstream repository patterns that may be pulled (fnmatch: "library/*", "myorg/**" is the
    # same as "myorg/*"); empty: any.
    allowed_repositories: list[str] = Field(default_factory=list)
    # A cached tag is served without asking the upstream while younger than this; then it is
    # revalidated (HEAD, digest compared) and refreshed when it moved.
    revalidate_seconds: float = Field(default=300.0, ge=0)
    # Upstream failing (down, timing out, 5xx): a cached tag is served, with a `Warning` header,
    # while its last successful check is at most this old; older, the client gets the error.
    max_staleness_seconds: float = Field(default=7 * 86400.0, ge=0)
    # Bytes of cached blobs this upstream may hold (0: no limit); beyond it, the least recently
    # pulled are evicted first (`lading proxy evict`).
    byte_budget: int = Field(default=0, ge=0)


class ProxyMirrorSettings(BaseModel):
    """Pull-based mirroring (`[[proxy.mirrors]]`): on a schedule, the tags of upstream repositories
    are copied into the upstream's local prefix ahead of any pull (manifests, children, blobs),
    incrementally: a tag whose digest did not move costs one HEAD, a blob already here nothing."""

    # The `[[proxy.upstreams]]` entry to mirror from (its prefix, credentials and limits apply).
    upstream: str = Field(min_length=1)
    # Upstream repository names ("library/alpine"), not patterns: not every registry lists its
    # catalog.
    repositories: list[str] = Field(min_length=1)
    # Tags copied (regular expression, whole tag).
    tags: str = ".*"
    # Seconds between two runs (each metadata replica may run it; a lease lets one at a time).
    interval_seconds: float = Field(default=3600.0, gt=0)

    @field_validator("tags")
    @classmethod
    def _regex(cls, value: str) -> str:
        re.compile(value)
        return value


class ProxySettings(BaseModel):
    """The pull-through cache (README "Pull-through cache"). Read by the metadata plane
    (manifests, tags, fetch leases) and the blob plane (blob bytes)."""

    upstreams: list[ProxyUpstreamSettings] = Field(default_factory=list)
    mirrors: list[ProxyMirrorSettings] = Field(default_factory=list)
    # Stop all upstream traffic: only cached content is served (tags with a `Warning` once due
    # for revalidation, within each upstream's max staleness).
    offline: bool = False
    # A replica fetching a blob holds a lease row in the metadata database so that no other
    # replica fetches the same blob. Its holder renews it every third of this while the fetch
    # runs; a lease not renewed (its holder died) lapses after this, and a waiter takes over.
    fetch_lease_seconds: float = Field(default=15.0, gt=0)
    # Cached blobs nobody pulled for this long are evicted (`lading proxy evict`; 0: never).
    evict_after_seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _distinct(self) -> ProxySettings:
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ValueError(f"proxy.upstreams: names must be distinct, got {names}")
        for mirror in self.mirrors:
            if mirror.upstream not in names:
                raise ValueError(f"proxy.mirrors: no upstream named {mirror.upstream!r} in proxy.upstreams")
        prefixes = sorted(u.prefix for u in self.upstreams)
        for a, b in zip(prefixes, prefixes[1:], strict=False):
            if b.startswith(a):
                raise ValueError(f"proxy.upstreams: prefix {b!r} lies inside prefix {a!r}; each repository "
                                 "must belong to one upstream")
        return self


class ReplicationRuleSettings(RegistryAccessSettings):
    """Push-based replication (`[[replication.rules]]`): content pushed into matching local
    repositories is copied to the registry at `url` (services/metadata/replication). Fed by the
    durable event outbox, so nothing pushed is missed across restarts; retried with backoff,
    dead-lettered after `max_attempts` (`lading events list|replay`: the rule's rows carry the
    endpoint name `replicate-<name>`)."""

    # Local repository patterns (fnmatch, "team/*"); empty: every repository.
    repositories: list[str] = Field(default_factory=list)
    # Tags (regular expression, whole tag) whose pushes are copied; manifests pushed by digest
    # (index children, signatures, SBOMs and other referrers) are copied whatever it says.
    tags: str = ".*"
    # Prepended to the repository name on the target ("" keeps the name).
    target_prefix: str = ""
    # Also delete on the target a manifest (by digest) or tag deleted here. Deletes the registry
    # makes on its own behalf (pull-through cache evictions, the garbage collector) are not copied.
    deletes: bool = False
    max_attempts: int = Field(default=10, ge=1)
    backoff_base_seconds: float = Field(default=1.0, ge=0)
    backoff_cap_seconds: float = Field(default=300.0, ge=0)

    @field_validator("tags")
    @classmethod
    def _regex(cls, value: str) -> str:
        re.compile(value)
        return value


class ReplicationSettings(BaseModel):
    """Replication to other registries (README "Replication"); read by the metadata plane."""

    rules: list[ReplicationRuleSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct(self) -> ReplicationSettings:
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"replication.rules: names must be distinct, got {names}")
        return self


class GovernanceSettings(BaseModel):
    """Governance for platform teams (services/metadata/policies): the metadata plane's section.
    The rules themselves live in the metadata database (`lading immutable ...`)."""

    # A manifest a tag left (moved or deleted) less than this long ago is kept by GC, so that
    # `lading tag restore` can bring it back (Quay's time machine), e.g. 14 days = 1209600.
    # 0 (default): GC does not look back. It matters only with gc.delete_untagged_manifests on:
    # otherwise GC never deletes a manifest and every one a tag left can be restored.
    history_window_seconds: float = Field(default=0.0, ge=0)
    # How long a one-time override of an immutable tag (`lading immutable override`) stays usable.
    override_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400.0)
    # How long each metadata replica keeps the signature and vulnerability policies it read; a
    # changed policy applies to pulls within this time. 0: read them at every pull.
    policy_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # Record every write through the API and every admin, policy and account change in the
    # audit_log table (`lading audit`; exported to event endpoints whose include_actions list "audit").
    audit_log: bool = True
    # Audit rows older than this are deleted (services/metadata/policies/pruning.py), e.g. 400 days =
    # 34560000; export them first (an event endpoint with "audit") if they must be kept longer. 0: never.
    audit_retention_seconds: float = Field(default=0.0, ge=0)
    # Tag history rows older than this are deleted; never inside `history_window_seconds`. 0: never.
    tag_history_retention_seconds: float = Field(default=0.0, ge=0)
    # How often each metadata replica looks for rows past those retentions.
    prune_interval_seconds: float = Field(default=3600.0, gt=0)


class ServeSettings(BaseModel):
    """`lading serve`'s supervision of its child planes (services/supervisor.py)."""

    # At a stop, each child plane gets its own bound (the gateway: `gateway.stop_bound_seconds`,
    # drain + grace + cleanup; the blob plane: `blob.stop_bound_seconds`, grace + cleanup) plus
    # this long to exit (its last flush, a killed gateway worker's reaping), before it is killed
    # (SIGKILL, with every process of its process group: the gateway's workers too).
    stop_margin_seconds: float = Field(default=10.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LADING_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    # Base folder of the embedded default; relative paths in other settings are relative to the
    # working directory, not to this.
    data_dir: Path = Path("data")
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    blob: BlobSettings = Field(default_factory=BlobSettings)
    metadata: MetadataSettings = Field(default_factory=MetadataSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    gc: GcSettings = Field(default_factory=GcSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    grpc_access: GrpcAccessSettings = Field(default_factory=GrpcAccessSettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    replication: ReplicationSettings = Field(default_factory=ReplicationSettings)
    regions: RegionSettings = Field(default_factory=RegionSettings)
    governance: GovernanceSettings = Field(default_factory=GovernanceSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("LADING_CONFIG_FILE")
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"LADING_CONFIG_FILE={config_file} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def is_user_set(settings: Settings, dotted: str, environ: Mapping[str, str]) -> bool:
    """True when the user chose `dotted` (e.g. "metadata.database_url") in `environ` (LADING_*
    variables) or in the config file, rather than leaving the built-in default."""
    env_name = "LADING_" + dotted.replace(".", "__").upper()
    if any(key.upper() == env_name for key in environ):
        return True
    node: Any = settings
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not isinstance(node, BaseModel) or part not in node.model_fields_set:
            return False
        node = getattr(node, part)
    return isinstance(node, BaseModel) and leaf in node.model_fields_set


def load_settings(**overrides: object) -> Settings:
    """Reads settings from the environment (and LADING_CONFIG_FILE); `overrides` win."""
    return Settings(**overrides)  # type: ignore[arg-type]
