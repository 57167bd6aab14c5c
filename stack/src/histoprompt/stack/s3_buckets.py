"""What the stack's two S3 servers (SeaweedFS, MinIO) share: the readiness probe and the
project's three buckets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from histoprompt.core.s3 import make_minio

if TYPE_CHECKING:
    from minio import Minio

    from histoprompt.core.settings import ConnectionSettings


def probe(conn: ConnectionSettings) -> None:
    """Raise unless an authenticated S3 ListBuckets succeeds (one try, short timeouts)."""
    # One try with short timeouts: the SDK's default back-off would hide the moment the
    # gateway comes up behind seconds of sleeping.
    make_minio(conn, connect_timeout=1.0, read_timeout=3.0, retries=0).list_buckets()


def create_buckets(conn: ConnectionSettings) -> Minio:
    """Create the slides, results and models buckets when missing; the client it used."""
    client = make_minio(conn)
    for bucket in (conn.slides_bucket, conn.results_bucket, conn.models_bucket):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    return client
