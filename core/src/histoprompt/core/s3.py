"""The one way every part builds its S3 client: the `minio` SDK, nothing vendor-specific."""

from __future__ import annotations

from typing import TYPE_CHECKING

from histoprompt.core.errors import ConfigError

if TYPE_CHECKING:
    from minio import Minio

    from histoprompt.core.settings import ConnectionSettings


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
    if connect_timeout is not None or retries is not None:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=(
                False
                if retries == 0
                else urllib3.Retry(
                    total=retries or 1, backoff_factor=0.2, status_forcelist=[502, 503, 504]
                )
            ),
        )
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=http,
    )


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/key` into (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigError(f"s3 URI has no bucket: {uri!r}")
    return bucket, key
