"""The S3 result layout (docs/architecture.md, "Results bucket"): one writer, many readers.

`s3://<results-bucket>/slides/<slide_id>/<model_version>/` holds tiles.parquet,
tile_embeddings.npy, slide_embedding.npy, pathways.json and manifest.json. The manifest is
written last, so its presence is the only signal that a result is whole: readers ignore
prefixes without one, and a writer killed half-way leaves nothing a reader would trust.

`write(..., exclusive=True)` (what ingest uses) makes the commit conditional, so two
processors of the same slide give one result: the writer first creates the prefix's
`writer.json` lease with `If-None-Match: *`; its etag is the fencing token, checked before
every object put; the manifest itself is created with `If-None-Match: *`. A loser raises
ResultAlreadyCommitted and writes nothing (docs/architecture.md, "Results bucket").
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from histoprompt.core import names
from histoprompt.core.errors import HistopromptError, NotFoundError
from histoprompt.core.s3 import map_s3_errors, put_if_absent, put_if_match, read_object
from histoprompt.core.schemas import PathwayScore, ResultManifest, utcnow

if TYPE_CHECKING:
    from minio import Minio

    from histoprompt.core.settings import ConnectionSettings


def s3_errors(what: str) -> AbstractContextManager[None]:
    """Translate minio/urllib3 failures into the project's error types, naming `what`."""
    return map_s3_errors(what)


def npy_bytes(array: NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes) -> NDArray[Any]:
    array: NDArray[Any] = np.load(io.BytesIO(data), allow_pickle=False)
    return array


@dataclass(frozen=True)
class SlideResult:
    """Everything one result prefix holds, in memory (tile embeddings are [n_tiles, D])."""

    tiles: pd.DataFrame
    tile_embeddings: NDArray[Any]
    slide_embedding: NDArray[Any]
    pathways: Mapping[str, PathwayScore]


TILE_COLUMNS = ("level", "x", "y", "tissue_fraction", "attention")
WRITER_LEASE = "writer.json"
# A lease unchanged for this long belongs to a writer that died between its lease and its
# manifest (a commit takes seconds): another writer may take it over (If-Match on its etag).
DEFAULT_LEASE_S = 60.0


class ResultAlreadyCommitted(HistopromptError):
    """Another writer committed (or is committing) this result: nothing was written."""

    code = "already_committed"


class ResultStore:
    """Reads and writes slide results in one bucket through the minio SDK."""

    def __init__(self, client: Minio, bucket: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        self._client = client
        self.bucket = bucket
        self.lease_s = lease_s

    @classmethod
    def from_settings(cls, settings: ConnectionSettings) -> ResultStore:
        from histoprompt.core.s3 import make_minio

        return cls(make_minio(settings), settings.results_bucket)

    def uri(self, slide_id: str, model_version: str) -> str:
        return f"s3://{self.bucket}/{names.result_prefix(slide_id, model_version)}"

    # -- writing ---------------------------------------------------------------------------

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        with s3_errors(f"writing s3://{self.bucket}/{key}"):
            self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )

    def write(
        self, manifest: ResultManifest, result: SlideResult, *, exclusive: bool = False
    ) -> str:
        """Write all objects, then the manifest; returns the result URI.

        exclusive: take the prefix's writer lease first and create the manifest only if it
        is absent; ResultAlreadyCommitted when another writer has (or is about to)."""
        missing = [c for c in TILE_COLUMNS if c not in result.tiles.columns]
        if missing:
            raise ValueError(f"tiles table lacks columns {missing}")
        if len(result.tiles) != result.tile_embeddings.shape[0]:
            raise ValueError("tiles table and tile embeddings disagree on the tile count")
        sid, ver = manifest.slide_id, manifest.model.version
        table = io.BytesIO()
        result.tiles.loc[:, list(TILE_COLUMNS)].to_parquet(table, index=False)
        pathways = {k: v.model_dump() for k, v in result.pathways.items()}
        objects = {
            names.RESULT_TILES: (table.getvalue(), "application/vnd.apache.parquet"),
            names.RESULT_TILE_EMBEDDINGS: (
                npy_bytes(result.tile_embeddings.astype(np.float16)),
                "application/octet-stream",
            ),
            names.RESULT_SLIDE_EMBEDDING: (
                npy_bytes(result.slide_embedding.astype(np.float32).reshape(-1)),
                "application/octet-stream",
            ),
            names.RESULT_PATHWAYS: (json.dumps(pathways).encode(), "application/json"),
        }
        token = self._acquire(sid, ver) if exclusive else None
        for name, (data, ctype) in objects.items():
            if token is not None:
                self._check_fence(sid, ver, token)
            self._put(names.result_key(sid, ver, name), data, ctype)
        if token is not None:
            self._check_fence(sid, ver, token)
        final = manifest.model_copy(update={"objects": sorted(objects)})
        self._commit_manifest(final, exclusive)
        return self.uri(sid, ver)

    def write_failure(self, manifest: ResultManifest, *, exclusive: bool = False) -> str:
        """Record a permanent failure: a manifest with status "failed" and its error, alone.

        The manifest makes the prefix complete, so a redelivered event for the same
        (slide_id, model version) is skipped instead of failing, and publishing, again.
        """
        if manifest.status != "failed" or manifest.error is None:
            raise ValueError("write_failure needs a manifest with status 'failed' and an error")
        sid, ver = manifest.slide_id, manifest.model.version
        final = manifest.model_copy(update={"objects": []})
        self._commit_manifest(final, exclusive)
        return self.uri(sid, ver)

    def _commit_manifest(self, manifest: ResultManifest, exclusive: bool) -> None:
        sid, ver = manifest.slide_id, manifest.model.version
        key = names.result_key(sid, ver, names.RESULT_MANIFEST)
        data = manifest.model_dump_json(by_alias=True).encode()
        if not exclusive:
            self._put(key, data, "application/json")
            return
        with s3_errors(f"committing s3://{self.bucket}/{key}"):
            etag = put_if_absent(self._client, self.bucket, key, data)
        if etag is None:
            raise ResultAlreadyCommitted(f"slide {sid} already has a result manifest")

    # -- the writer lease (exclusive writes) ------------------------------------------------

    def _acquire(self, slide_id: str, model_version: str) -> str:
        """Take the prefix's writer lease: its etag (the fencing token).

        A live lease is waited on: its writer commits within seconds, and then this one is a
        duplicate. A lease whose etag has not changed for `lease_s` (measured on this
        process's monotonic clock, so S3 and worker clocks never need to agree) is taken
        over with If-Match, which only one taker can win."""
        key = names.result_key(slide_id, model_version, WRITER_LEASE)
        body = json.dumps({"token": uuid.uuid4().hex, "at": utcnow()}).encode()
        seen: tuple[str, float] | None = None
        delay = 0.05
        while True:
            if self.is_complete(slide_id, model_version):
                raise ResultAlreadyCommitted(f"slide {slide_id} already has a result manifest")
            with s3_errors(f"taking the writer lease s3://{self.bucket}/{key}"):
                etag = put_if_absent(self._client, self.bucket, key, body)
            if etag is not None:
                return etag
            current = self._etag(key)
            if current is None:
                continue  # released between the put and the stat: try again at once
            if seen is None or seen[0] != current:
                seen = (current, time.monotonic())
            elif time.monotonic() - seen[1] >= self.lease_s:
                with s3_errors(f"taking over the writer lease s3://{self.bucket}/{key}"):
                    taken = put_if_match(self._client, self.bucket, key, body, current)
                if taken is not None:
                    return taken
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _etag(self, key: str) -> str | None:
        try:
            with s3_errors("reading a writer lease"):
                stat = self._client.stat_object(self.bucket, key)
        except NotFoundError:
            return None
        return (stat.etag or "").strip('"')

    def _check_fence(self, slide_id: str, model_version: str, token: str) -> None:
        """Still the lease holder? A writer that lost it (taken over) must stop writing."""
        key = names.result_key(slide_id, model_version, WRITER_LEASE)
        if self._etag(key) != token:
            raise ResultAlreadyCommitted(f"slide {slide_id}: the writer lease was taken over")

    # -- reading ---------------------------------------------------------------------------

    def _get(self, key: str) -> bytes:
        with s3_errors(f"reading s3://{self.bucket}/{key}"):
            return read_object(self._client, self.bucket, key)

    def is_complete(self, slide_id: str, model_version: str) -> bool:
        """True when the manifest exists, i.e. the result is whole (the idempotency check)."""
        try:
            with s3_errors("checking a result manifest"):
                self._client.stat_object(
                    self.bucket, names.result_key(slide_id, model_version, names.RESULT_MANIFEST)
                )
        except NotFoundError:
            return False
        return True

    def versions(self, slide_id: str) -> list[str]:
        """Model versions with a complete result for this slide."""
        prefix = f"slides/{slide_id}/"
        with s3_errors(f"listing results of slide {slide_id}"):
            objs = list(self._client.list_objects(self.bucket, prefix=prefix, recursive=True))
        done = {
            o.object_name[len(prefix) :].split("/")[0]
            for o in objs
            if o.object_name is not None and o.object_name.endswith("/" + names.RESULT_MANIFEST)
        }
        return sorted(done)

    def read_manifest(self, slide_id: str, model_version: str | None = None) -> ResultManifest:
        ver = model_version or self.latest_version(slide_id)
        raw = self._get(names.result_key(slide_id, ver, names.RESULT_MANIFEST))
        return ResultManifest.model_validate_json(raw)

    def latest_version(self, slide_id: str) -> str:
        """The version whose manifest is newest; NotFoundError when the slide has none."""
        found = self.versions(slide_id)
        if not found:
            raise NotFoundError(
                f"no result for slide {slide_id} in s3://{self.bucket}; "
                "check the id (`histoprompt watch --once`) or wait for processing"
            )
        if len(found) == 1:
            return found[0]
        return max(found, key=lambda v: self.read_manifest(slide_id, v).created)

    def read_pathways(
        self, slide_id: str, model_version: str | None = None
    ) -> dict[str, PathwayScore]:
        ver = model_version or self.latest_version(slide_id)
        raw: dict[str, Any] = json.loads(
            self._get(names.result_key(slide_id, ver, names.RESULT_PATHWAYS))
        )
        return {k: PathwayScore.model_validate(v) for k, v in raw.items()}

    def read_slide_embedding(self, slide_id: str, model_version: str | None = None) -> NDArray[Any]:
        ver = model_version or self.latest_version(slide_id)
        return npy_load(self._get(names.result_key(slide_id, ver, names.RESULT_SLIDE_EMBEDDING)))

    def read_tile_embeddings(self, slide_id: str, model_version: str | None = None) -> NDArray[Any]:
        ver = model_version or self.latest_version(slide_id)
        return npy_load(self._get(names.result_key(slide_id, ver, names.RESULT_TILE_EMBEDDINGS)))

    def read_tiles(self, slide_id: str, model_version: str | None = None) -> pd.DataFrame:
        ver = model_version or self.latest_version(slide_id)
        return pd.read_parquet(
            io.BytesIO(self._get(names.result_key(slide_id, ver, names.RESULT_TILES)))
        )
