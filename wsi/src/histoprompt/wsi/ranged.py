"""Ranged reads over S3: a byte-range fetcher, range coalescing and a seekable file object.

Shared by ingest (slide readers) and the client (thumbnails): nothing downloads a whole slide;
headers and offset tables come through a small block cache (`RangedFile`), frames through
`read_ranges`, which merges nearby ranges into few GETs. minio is imported lazily, so this
module loads without it. A missing or truncated object is a SlideError (never retried); any
other S3 failure is a TransientError (retried), with the codes results and the DLQ report.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from histoprompt.core.s3 import MISSING_ERROR_CODES, map_s3_errors
from histoprompt.wsi.errors import (
    ObjectMissingError,
    SlideError,
    StoreDeniedError,
    TruncatedReadError,
)

if TYPE_CHECKING:
    from minio import Minio

__all__ = [
    "ByteSource",
    "BytesSource",
    "LocalFileSource",
    "RangedFile",
    "S3Object",
    "Span",
    "TruncatedReadError",
    "coalesce",
    "read_ranges",
]

# A ranged GET of an object that was just stat'ed: a vanished bucket is not the object's
# absence, so it stays a store failure (retried), as it always was.
_GET_MISSING = MISSING_ERROR_CODES - {"NoSuchBucket"}


class ByteSource(Protocol):
    """An immutable object of known size that can serve byte ranges."""

    size: int
    gets: int

    def read_range(self, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class Span:
    """Bytes [start, end) of an object."""

    start: int
    end: int


MAX_WASTE = 0.2
"""read_ranges' default bound on the unwanted bytes a merged GET may carry, as a fraction of
the wanted bytes in it: so frames are read at most 1.2x the bytes wanted (issue 15's bound on
a sparse slide). A tighter bound split the data-path benchmark's dense slide into several
times more frame GETs for a few percent fewer bytes; each GET costs the S3 server and the SDK
far more than its bytes (BENCHMARKS.md, Ingest: GETs and the history)."""


def coalesce(
    ranges: Sequence[tuple[int, int]], gap: int, max_len: int, max_waste: float | None = None
) -> list[Span]:
    """Merge (offset, length) ranges whose gap is <= `gap` into spans of at most `max_len`.

    With `max_waste`, a merge is also refused when the gap bytes inside the span would pass
    that fraction of the wanted bytes in it: on a sparse slide the frames under tissue are
    separated by runs of small background frames, and merging across them fetches bytes no
    tile needs. Frames of a dense region are adjacent (gaps of an item header) and still
    merge. A single range longer than max_len stays one span (it cannot be split usefully).
    """
    spans: list[Span] = []
    wanted = waste = 0
    for off, length in sorted(ranges):
        end = off + length
        if spans:
            last = spans[-1]
            skip = max(0, off - last.end)
            if (
                off - last.end <= gap
                and max(end, last.end) - last.start <= max_len
                and (max_waste is None or waste + skip <= max_waste * (wanted + length))
            ):
                spans[-1] = Span(last.start, max(end, last.end))
                wanted, waste = wanted + length, waste + skip
                continue
        spans.append(Span(off, end))
        wanted, waste = length, 0
    return spans


def _s3_call(what: str, missing: frozenset[str]) -> AbstractContextManager[None]:
    """minio/urllib3 failures -> ObjectMissingError, StoreDeniedError, or TransientError (code
    s3_error, or s3_unavailable when S3 cannot be reached). Messages name the operation, never
    the key: keys may carry patient identifiers and these messages reach logs and the DLQ."""
    return map_s3_errors(
        what,
        missing_codes=missing,
        missing=ObjectMissingError,
        denied=StoreDeniedError,
        unreachable_code="s3_unavailable",
        tls_hint=False,
    )


class _CountedReads:
    """Thread-safe GET and byte counters, and the short-read check, of a ByteSource whose
    reads may run in worker threads."""

    def __init__(self) -> None:
        self.gets = 0
        self.bytes_read = 0
        self._lock = threading.Lock()

    def _counted(self, data: bytes, length: int) -> bytes:
        with self._lock:
            self.gets += 1
            self.bytes_read += len(data)
        if len(data) != length:
            raise TruncatedReadError(f"short read: {len(data)} of {length} bytes")
        return data


class S3Object(_CountedReads):
    """One S3 object read by ranged GETs through the minio SDK (thread-safe counters)."""

    def __init__(self, client: Minio, bucket: str, key: str, size: int | None = None) -> None:
        super().__init__()
        self._client = client
        self.bucket = bucket
        self.key = key
        self.size = size if size is not None else self._stat()

    def _stat(self) -> int:
        with _s3_call("S3 stat", MISSING_ERROR_CODES):
            return int(self._client.stat_object(self.bucket, self.key).size or 0)

    def read_range(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        if offset < 0 or offset + length > self.size:
            raise TruncatedReadError(
                f"read past the end of the object ({offset}+{length} > {self.size})"
            )
        with _s3_call("S3 ranged GET", _GET_MISSING):
            resp = self._client.get_object(self.bucket, self.key, offset=offset, length=length)
            try:
                data = resp.read()
            finally:
                resp.close()
                resp.release_conn()
        return self._counted(data, length)


class BytesSource:
    """A ByteSource over bytes in memory (unit tests, tiny objects)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)
        self.gets = 0

    def read_range(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.size:
            raise TruncatedReadError("read past the end of the object")
        self.gets += 1
        return self._data[offset : offset + length]


def read_ranges(
    source: ByteSource,
    ranges: Sequence[tuple[int, int]],
    gap: int,
    max_len: int,
    max_waste: float | None = MAX_WASTE,
) -> dict[tuple[int, int], bytes]:
    """Fetch many (offset, length) ranges with as few GETs as coalescing allows (see
    `coalesce` for `max_waste`)."""
    out: dict[tuple[int, int], bytes] = {}
    if not ranges:
        return out
    wanted = sorted(set(ranges))
    spans = coalesce(wanted, gap, max_len, max_waste)
    i = 0
    for span in spans:
        blob = source.read_range(span.start, span.end - span.start)
        while i < len(wanted) and wanted[i][0] + wanted[i][1] <= span.end:
            off, length = wanted[i]
            out[(off, length)] = blob[off - span.start : off - span.start + length]
            i += 1
    return out


# Largest single read() a parser may ask of a RangedFile: a corrupt length field in a DICOM
# header or a TIFF byte count must fail, not allocate gigabytes.
MAX_PARSER_READ = 64 * 1024 * 1024


class RangedFile(io.RawIOBase):
    """A seekable, read-only file object over a ByteSource with a small LRU block cache.

    read() never allocates past the object's end nor past `max_read` (SlideError
    `too_large`): parsers size their reads from lengths in the file, which may be corrupt."""

    def __init__(
        self,
        source: ByteSource,
        block_size: int = 256 * 1024,
        blocks: int = 64,
        max_read: int = MAX_PARSER_READ,
    ) -> None:
        super().__init__()
        self._src = source
        self._block = block_size
        self._max_blocks = blocks
        self._max_read = max_read
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._src.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._src.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _get_block(self, index: int) -> bytes:
        with self._lock:
            block = self._cache.get(index)
            if block is not None:
                self._cache.move_to_end(index)
                return block
        start = index * self._block
        data = self._src.read_range(start, min(self._block, self._src.size - start))
        with self._lock:
            self._cache[index] = data
            while len(self._cache) > self._max_blocks:
                self._cache.popitem(last=False)
        return data

    def pread(self, offset: int, length: int) -> bytes:
        """Read without moving the position (thread-safe)."""
        end = min(offset + length, self._src.size)
        if offset >= end:
            return b""
        parts = []
        pos = offset
        while pos < end:
            index = pos // self._block
            block = self._get_block(index)
            lo = pos - index * self._block
            hi = min(len(block), end - index * self._block)
            parts.append(block[lo:hi])
            pos = index * self._block + hi
        return b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        # tifffile passes numpy arrays; a flat byte view takes slices of any of them.
        view = memoryview(buffer).cast("B")
        data = self.pread(self._pos, len(view))
        n = len(data)
        view[:n] = data
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        left = max(0, self._src.size - self._pos)
        want = left if size is None or size < 0 else min(size, left)
        if want > self._max_read:
            raise SlideError(
                f"a read of {want} bytes exceeds the parser limit of {self._max_read}",
                code="too_large",
            )
        data = self.pread(self._pos, want)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)


class LocalFileSource(_CountedReads):
    """A ByteSource over a local file (the CLI's `predict`, tests); opened per read, so it
    holds no descriptor between reads."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        try:
            self.size = path.stat().st_size
        except FileNotFoundError as err:
            raise ObjectMissingError(f"{path.name}: no such file") from err

    def read_range(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        if offset < 0 or offset + length > self.size:
            raise TruncatedReadError("read past the end of the file")
        with self.path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
        return self._counted(data, length)
