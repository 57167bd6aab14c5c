"""histoprompt.wsi.ranged: byte sources, the block-cached file, and the stable error codes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from minio.error import S3Error
from urllib3.exceptions import ProtocolError

from histoprompt.core.errors import (
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    TransientError,
)
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.ranged import BytesSource, RangedFile, S3Object, TruncatedReadError


class _Stat:
    def __init__(self, size: int) -> None:
        self.size = size


class _Resp:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self) -> bytes:
        return self._data

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class FakeMinio:
    """stat_object/get_object over bytes in memory, or raising a given error (unit tests only)."""

    def __init__(self, data: bytes, error: Exception | None = None, short: bool = False) -> None:
        self.data, self.error, self.short = data, error, short

    def stat_object(self, bucket: str, key: str) -> _Stat:
        return _Stat(len(self.data))

    def get_object(self, bucket: str, key: str, offset: int, length: int) -> _Resp:
        if self.error is not None:
            raise self.error
        end = offset + length - (1 if self.short else 0)
        return _Resp(self.data[offset:end])


def _s3_error(code: str) -> S3Error:
    return S3Error(None, code, "synthetic", "res", "req", "host")  # type: ignore[arg-type]


def test_ranged_file_over_s3_object_counts_gets_and_fills_numpy_buffers() -> None:
    data = bytes(range(256)) * 40
    obj = S3Object(FakeMinio(data), "b", "k")  # type: ignore[arg-type]
    assert obj.size == len(data)
    fh = RangedFile(obj, block_size=1024, blocks=4)
    fh.seek(1000)
    buf = np.zeros(100, dtype=np.uint16)  # tifffile reads into typed arrays
    assert fh.readinto(buf) == 200
    assert buf.tobytes() == data[1000:1200]
    assert obj.gets == 2 and obj.bytes_read == 2048
    assert fh.pread(1000, 10) == data[1000:1010]
    assert obj.gets == 2  # served from the block cache


def test_truncated_reads() -> None:
    with pytest.raises(TruncatedReadError):
        BytesSource(b"abc").read_range(2, 5)
    obj = S3Object(FakeMinio(b"x" * 10, short=True), "b", "k")  # type: ignore[arg-type]
    with pytest.raises(TruncatedReadError, match="short read"):
        obj.read_range(0, 5)


@pytest.mark.parametrize(
    ("raised", "kind", "code"),
    [
        (_s3_error("NoSuchKey"), SlideError, "missing_object"),
        (_s3_error("NoSuchKey"), NotFoundError, "missing_object"),
        (_s3_error("AccessDenied"), TransientError, "s3_error"),
        (_s3_error("AccessDenied"), PermissionDeniedError, "s3_error"),
        (_s3_error("SlowDown"), ServiceUnavailableError, "s3_error"),
        (_s3_error("SlowDown"), TransientError, "s3_error"),
        (ProtocolError("reset"), TransientError, "s3_unavailable"),
    ],
)
def test_s3_object_error_types_and_codes(raised: Exception, kind: Any, code: str) -> None:
    obj = S3Object(FakeMinio(b"x" * 10, raised), "b", "k")  # type: ignore[arg-type]
    with pytest.raises(kind) as info:
        obj.read_range(0, 4)
    assert info.value.code == code
    with pytest.raises(SlideError) as trunc:
        obj.read_range(8, 4)
    assert trunc.value.code == "truncated"
