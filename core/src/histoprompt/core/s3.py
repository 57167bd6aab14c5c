"""The one way every part builds its S3 client: the `minio` SDK, nothing vendor-specific."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from histoprompt.core.errors import (
    ConfigError,
    HistopromptError,
    NotFoundError,
    PermissionDeniedError,
    TransientError,
)

if TYPE_CHECKING:
    from minio import Minio

    from histoprompt.core.settings import ConnectionSettings


_POOL_CONNECTIONS = 16

# S3 error codes every S3 caller maps the same way (results store, slide reads).
AUTH_ERROR_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"}
)
MISSING_ERROR_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject"})


@contextmanager
def map_s3_errors(
    what: str,
    *,
    missing_codes: frozenset[str] = MISSING_ERROR_CODES,
    missing: type[HistopromptError] = NotFoundError,
    denied: type[HistopromptError] = PermissionDeniedError,
    unreachable_code: str = "s3_error",
    tls_hint: bool = True,
) -> Iterator[None]:
    """minio/urllib3 failures -> `missing` (an S3 code in `missing_codes`), `denied` (refused
    credentials; with `tls_hint`, a refused certificate too) or TransientError (retried: code
    s3_error for the store's own trouble, `unreachable_code` when it cannot be reached).
    Messages name `what` and the S3 code, never the object's key on their own: callers pass
    a `what` without keys where keys may carry patient identifiers (slide reads)."""
    from minio.error import S3Error
    from urllib3.exceptions import HTTPError

    try:
        yield
    except S3Error as err:
        if err.code in missing_codes:
            raise missing(f"{what}: not found in S3 ({err.code})") from err
        if err.code in AUTH_ERROR_CODES:
            raise denied(
                f"{what}: S3 refused the credentials ({err.code}); "
                "check HISTOPROMPT_S3_ACCESS_KEY / HISTOPROMPT_S3_SECRET_KEY"
            ) from err
        # SlowDown, InternalError, a vanished bucket...: the store's trouble, retried.
        raise TransientError(f"{what}: S3 error {err.code}", code="s3_error") from err
    except HTTPError as err:
        from histoprompt.core.preflight import tls_refused

        if tls_hint and tls_refused(err):
            raise denied(
                f"{what}: the S3 endpoint's TLS certificate is not trusted; "
                "check HISTOPROMPT_S3_CA_FILE"
            ) from err
        raise TransientError(
            f"{what}: S3 unreachable ({type(err).__name__})", code=unreachable_code
        ) from err


def read_object(client: Minio, bucket: str, key: str) -> bytes:
    """The whole object `bucket/key` (small objects: manifests, records, references); the
    response is closed and its connection returned to the pool whatever happens."""
    resp = client.get_object(bucket, key)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def make_minio(
    settings: ConnectionSettings,
    *,
    connect_timeout: float | None = None,
    read_timeout: float = 300.0,
    retries: int | None = None,
) -> Minio:
    """A Minio client for the configured endpoint; minio is imported lazily.

    With `connect_timeout` or `retries` the client gets its own connection pool: the SDK's
    default retries a refused connection with back-off for a long time, which is right for
    a service but hides an unreachable endpoint from a CLI or a health probe.
    """
    try:
        import urllib3
        from minio import Minio
    except ImportError as err:  # pragma: no cover - every part that calls this depends on minio
        raise ConfigError("the minio package is missing: pip install minio") from err
    http = None
    # A CA file of our own (the test CA of the stack's TLS mode, a private PKI) needs a pool
    # that trusts it; the SDK's default pool trusts only certifi's bundle.
    tls: dict[str, Any] = {}
    if settings.s3_secure and settings.s3_ca_file:
        tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": settings.s3_ca_file}
    if connect_timeout is not None or retries is not None or tls:
        http = urllib3.PoolManager(
            # As many kept-alive connections as the SDK's own default client keeps: ranged
            # reads run in worker threads, and a pool of one (urllib3's default) reconnects
            # on every concurrent GET and logs "Connection pool is full".
            maxsize=_POOL_CONNECTIONS,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            **tls,
            retries=(
                False
                if retries == 0
                else urllib3.Retry(
                    # With only a CA file: the SDK's own default of 5 tries.
                    total=retries or (5 if connect_timeout is None and retries is None else 1),
                    backoff_factor=0.2,
                    status_forcelist=[502, 503, 504],
                )
            ),
        )
    try:
        return Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http,
        )
    except ValueError as err:  # the SDK refuses a scheme's path, a bad port, ...
        raise ConfigError(
            f"HISTOPROMPT_S3_ENDPOINT {settings.s3_endpoint[:80]!r} is not host:port ({err})"
        ) from err


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/key` into (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigError(f"s3 URI has no bucket: {uri!r}")
    return bucket, key


# Conditional writes: S3's `If-None-Match: *` (create only) and `If-Match: <etag>` (replace
# only what was read). AWS S3, MinIO and SeaweedFS (4.48, checked by
# tests/integration/test_result_commit.py) answer 412 PreconditionFailed when the condition
# fails; AWS answers 409 ConditionalRequestConflict while a racing write is in flight. The
# minio SDK's put_object turns unknown headers into user metadata, so these go through its
# lower-level _put_object, which sends headers as given.
_LOST = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


def _conditional_put(
    client: Minio, bucket: str, key: str, data: bytes, content_type: str, cond: dict[str, str]
) -> str | None:
    from minio.error import S3Error

    headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": content_type, **cond}
    try:
        result = client._put_object(bucket, key, data, headers=headers)
    except S3Error as err:
        if err.code in _LOST:
            return None
        raise
    return (result.etag or "").strip('"')


def put_if_absent(
    client: Minio, bucket: str, key: str, data: bytes, content_type: str = "application/json"
) -> str | None:
    """Create `key` only if it does not exist: its etag, or None when it already did."""
    return _conditional_put(client, bucket, key, data, content_type, {"If-None-Match": "*"})


def put_if_match(
    client: Minio,
    bucket: str,
    key: str,
    data: bytes,
    etag: str,
    content_type: str = "application/json",
) -> str | None:
    """Replace `key` only if its etag is still `etag`: the new etag, or None when it changed."""
    quoted = f'"{etag.strip(chr(34))}"'
    return _conditional_put(client, bucket, key, data, content_type, {"If-Match": quoted})
