"""Builds the S3 backend from the settings (`blob.s3.*`): the HTTP client with its timeouts and
retries, the credential chain, the presigning client, and the backend itself. No I/O.
"""

from __future__ import annotations

from concurrent.futures import Executor
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.credentials.providers import (
    AWSConfigProvider,
    ChainedProvider,
    EnvAWSProvider,
    EnvMinioProvider,
    IamAwsProvider,
    Provider,
    StaticProvider,
)
from minio.helpers import check_bucket_name

from services.blob.backends.s3 import ReportingProvider, S3Backend
from services.common.settings import BlobSettings, S3BackendSettings


def _credentials(settings: S3BackendSettings, http: urllib3.PoolManager) -> Provider:
    """Static keys when configured, else the standard chain (env, AWS files, instance role);
    either way, a failure to produce credentials is reported as `NoCredentials`."""
    if settings.access_key or settings.secret_key:
        if not (settings.access_key and settings.secret_key):
            raise ValueError(
                "set both LADING_BLOB__S3__ACCESS_KEY and LADING_BLOB__S3__SECRET_KEY, or neither"
            )
        return ReportingProvider(
            StaticProvider(settings.access_key, settings.secret_key, settings.session_token or None)
        )
    return ReportingProvider(ChainedProvider(
        [
            EnvAWSProvider(),
            EnvMinioProvider(),
            AWSConfigProvider(),
            # EC2/ECS metadata or a web-identity token (EKS IRSA); short timeouts via `http`.
            IamAwsProvider(http_client=http),
        ]
    ))


def _http_client(settings: S3BackendSettings, pool_size: int) -> urllib3.PoolManager:
    """Timeouts and few, quick retries: a stopped S3 turns into UNAVAILABLE, never a hang."""
    retries = urllib3.Retry(
        total=settings.max_retries,
        connect=settings.max_retries,
        read=settings.max_retries,
        backoff_factor=0.2,
        backoff_max=2.0,
        status_forcelist=[500, 502, 503, 504],
        # urllib3 retries only idempotent methods by default; S3 POSTs (create/complete
        # multipart) are safe to repeat too but a retried complete may answer NoSuchUpload.
        raise_on_status=False,
    )
    ca_certs = str(settings.ca_bundle) if settings.ca_bundle else certifi.where()
    return urllib3.PoolManager(
        num_pools=4,
        maxsize=pool_size,
        timeout=urllib3.Timeout(connect=settings.connect_timeout_seconds, read=settings.read_timeout_seconds),
        retries=retries,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_certs,
    )


def _client(
    endpoint: str,
    *,
    secure: bool,
    settings: S3BackendSettings,
    http: urllib3.PoolManager,
    credentials: Provider,
) -> Minio:
    client = Minio(
        endpoint, secure=secure, region=settings.region or None, http_client=http, credentials=credentials
    )
    if settings.path_style is True:
        client.disable_virtual_style_endpoint()
    elif settings.path_style is False:
        client.enable_virtual_style_endpoint()
    return client


def create_s3_backend(settings: BlobSettings, executor: Executor | None = None) -> S3Backend:
    """Builds the S3 backend from `settings.s3` (no I/O: call `ensure_bucket` at start-up).

    `executor` is the blob plane's pool for blocking calls (the caller shuts it down); None
    gives the backend its own of `settings.io_threads` threads. Raises ValueError for settings
    that cannot work (no bucket, half a key pair, a malformed presign_endpoint).
    """
    s3 = settings.s3
    if not s3.bucket:
        raise ValueError("backend 's3' needs a bucket: set LADING_BLOB__S3__BUCKET")
    try:
        check_bucket_name(s3.bucket)
    except ValueError as exc:
        raise ValueError(f"LADING_BLOB__S3__BUCKET: {exc}") from None
    # One connection per pool thread, so concurrent calls never queue for (or drop) connections.
    http = _http_client(s3, pool_size=max(settings.io_threads, 1))
    credentials = _credentials(s3, http)
    client = _client(s3.endpoint, secure=s3.secure, settings=s3, http=http, credentials=credentials)
    presign_client = None
    if s3.presign_endpoint:
        public = urlsplit(s3.presign_endpoint)
        if public.scheme not in ("http", "https") or not public.netloc or public.path not in ("", "/"):
            raise ValueError(
                f"LADING_BLOB__S3__PRESIGN_ENDPOINT must look like https://host[:port], not {s3.presign_endpoint!r}"
            )
        # Signing needs no I/O when the region is set; it shares the connection pool anyway.
        presign_client = _client(
            public.netloc, secure=public.scheme == "https", settings=s3, http=http, credentials=credentials
        )
    scheme = "https" if s3.secure else "http"
    return S3Backend(
        client,
        bucket=s3.bucket,
        key_prefix=s3.key_prefix,
        executor=executor,
        io_threads=settings.io_threads,
        part_size=s3.part_size_bytes,
        part_buffer_budget=s3.part_buffer_budget_bytes,
        compose_concurrency=s3.compose_concurrency,
        presign_client=presign_client,
        presign_expiry_seconds=s3.presign_expiry_seconds,
        http=http,
        description=f"{scheme}://{s3.endpoint}/{s3.bucket}",
        create_bucket=s3.create_bucket,
        purge_multipart_uploads=s3.purge_multipart_uploads,
    )
