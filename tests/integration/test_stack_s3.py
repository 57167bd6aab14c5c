"""S3 (real SeaweedFS gateway, minio SDK only): multipart put, ranged get, list, stat."""

from __future__ import annotations

import hashlib
import io
import uuid

import numpy as np
import pytest

from histoprompt.core.s3 import make_minio
from histoprompt.stack import StackHandle

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def test_buckets_exist(stack: StackHandle) -> None:
    client = make_minio(stack.settings)
    names = {b.name for b in client.list_buckets()}
    s = stack.settings
    assert {s.slides_bucket, s.results_bucket, s.models_bucket} <= names


def test_multipart_put_ranged_get_list_stat(stack: StackHandle) -> None:
    client = make_minio(stack.settings)
    bucket = stack.settings.slides_bucket
    prefix = f"stack-test/{uuid.uuid4().hex[:8]}/"
    # Synthetic bytes (no slide): 12 MiB in 5 MiB parts is a three-part multipart upload.
    data = np.random.default_rng(7).integers(0, 256, size=12 * MIB, dtype=np.uint8).tobytes()
    result = client.put_object(
        bucket, prefix + "blob.bin", io.BytesIO(data), len(data), part_size=5 * MIB
    )
    # An S3 multipart ETag is "<md5 of part md5s>-<number of parts>".
    assert result.etag.strip('"').endswith("-3")
    client.put_object(bucket, prefix + "small.txt", io.BytesIO(b"synthetic"), 9)

    stat = client.stat_object(bucket, prefix + "blob.bin")
    assert stat.size == len(data)

    for offset, length in ((0, 10), (5 * MIB - 3, 7), (len(data) - 100, 100), (123_457, MIB)):
        response = client.get_object(bucket, prefix + "blob.bin", offset=offset, length=length)
        try:
            assert response.read() == data[offset : offset + length]
        finally:
            response.close()
            response.release_conn()

    whole = client.get_object(bucket, prefix + "blob.bin")
    try:
        assert hashlib.sha256(whole.read()).digest() == hashlib.sha256(data).digest()
    finally:
        whole.close()
        whole.release_conn()

    listed = {o.object_name: o.size for o in client.list_objects(bucket, prefix=prefix)}
    assert listed == {prefix + "blob.bin": len(data), prefix + "small.txt": 9}
