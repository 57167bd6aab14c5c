"""A read-only, seekable file over one S3 object, by ranged GETs (for TIFF headers and levels)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minio import Minio

__all__ = ["S3RangeFile"]


class S3RangeFile(io.RawIOBase):
    """Reads only the byte ranges asked for, in `block`-sized GETs that are cached."""

    def __init__(self, client: Minio, bucket: str, key: str, block: int = 256 * 1024) -> None:
        from histoprompt.core.results import s3_errors

        super().__init__()
        self._client, self._bucket, self._key, self._block = client, bucket, key, block
        with s3_errors(f"reading s3://{bucket}/{key}"):
            self.size = int(client.stat_object(bucket, key).size or 0)
        self._pos = 0
        self._cache: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _blk(self, index: int) -> bytes:
        if index not in self._cache:
            from histoprompt.core.results import s3_errors

            start = index * self._block
            with s3_errors(f"reading s3://{self._bucket}/{self._key}"):
                resp = self._client.get_object(
                    self._bucket,
                    self._key,
                    offset=start,
                    length=min(self._block, self.size - start),
                )
                try:
                    self._cache[index] = resp.read()
                finally:
                    resp.close()
                    resp.release_conn()
        return self._cache[index]

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        # tifffile passes numpy arrays; a flat byte view takes slices of any of them.
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.size - self._pos)
        if want <= 0:
            return 0
        got = 0
        while got < want:
            index, off = divmod(self._pos + got, self._block)
            chunk = self._blk(index)[off : off + want - got]
            if not chunk:
                break
            view[got : got + len(chunk)] = chunk
            got += len(chunk)
        self._pos += got
        return got
