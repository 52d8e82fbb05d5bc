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
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MiB = 1024 * 1024


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


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 5000
    metadata_target: str = "unix:data/run/metadata.sock"
    blob_target: str = "unix:data/run/blob.sock"
    grpc: GrpcClientSettings = Field(default_factory=GrpcClientSettings)
    # The spec asks registries to accept manifests of at least 4 MiB; larger ones get 413.
    max_manifest_bytes: int = 4 * MiB
    # Bytes per gRPC message when streaming blob bodies (the blob plane accepts ≤ 1 MiB).
    chunk_bytes: int = 1 * MiB
    # Default and maximum page sizes for tags/list, _catalog and referrers.
    default_page_size: int = 1000
    max_page_size: int = 10000
    # Accept X-Forwarded-Proto/-Host from these client addresses ("*" for any).
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # uvicorn worker processes for this gateway.
    workers: int = 1
    log_level: str = "info"


class FilesystemBackendSettings(BaseModel):
    root: Path = Path("data/blobs")


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
    # Size of each part of a streamed multipart write (≥ 5 MiB, S3's minimum); two parts per
    # write in flight are held in memory.
    part_size_bytes: int = Field(default=16 * MiB, ge=5 * MiB, le=512 * MiB)
    # Parallel server-side part copies per compose.
    compose_concurrency: int = Field(default=4, ge=1, le=64)
    # A stopped or unreachable S3 answers UNAVAILABLE after these, instead of hanging.
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    max_retries: int = 3


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
    shutdown_grace_seconds: float = 10.0


class MetadataSettings(BaseModel):
    listen: str = "unix:data/run/metadata.sock"
    database_url: str = "sqlite+aiosqlite:///data/registry.db"
    # Apply pending migrations at start-up (the embedded default); production runs `lading migrate`.
    auto_migrate: bool = True
    pool_size: int = 10
    max_overflow: int = 10
    # Seconds a statement may run (PostgreSQL) / wait for a lock (SQLite busy timeout).
    statement_timeout_seconds: float = 30.0
    shutdown_grace_seconds: float = 10.0


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


def load_settings(**overrides: object) -> Settings:
    """Reads settings from the environment (and LADING_CONFIG_FILE); `overrides` win."""
    return Settings(**overrides)  # type: ignore[arg-type]
