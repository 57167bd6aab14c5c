"""ResultStore against an in-memory S3 fake (the real S3 path is covered in integration)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from histoprompt.core.errors import NotFoundError
from histoprompt.core.results import ResultStore, SlideResult
from histoprompt.core.schemas import PathwayScore, ResultManifest


@dataclass
class _Obj:
    object_name: str


@dataclass
class FakeMinio:
    """Just enough of the minio client; records the order of puts."""

    objects: dict[str, bytes] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def put_object(self, bucket, key, data, length, content_type=None):  # noqa: ANN001
        self.objects[key] = data.read(length)
        self.order.append(key)

    def get_object(self, bucket, key):  # noqa: ANN001
        from minio.error import S3Error

        if key not in self.objects:
            raise S3Error(None, "NoSuchKey", "missing", key, "r", "h")  # type: ignore[arg-type]
        body = io.BytesIO(self.objects[key])
        body.release_conn = lambda: None  # type: ignore[attr-defined]
        return body

    def stat_object(self, bucket, key):  # noqa: ANN001
        self.get_object(bucket, key)

    def list_objects(self, bucket, prefix, recursive):  # noqa: ANN001
        return [_Obj(k) for k in self.objects if k.startswith(prefix)]


def _manifest(version: str, created: str) -> ResultManifest:
    return ResultManifest(
        slide_id="ab" * 8,
        source={"bucket": "s", "key": "k", "etag": "e"},
        model={"name": "tiny", "version": version},
        status="done",
        n_tiles=3,
        seconds={"read": 1.0, "infer": 2.0, "total": 3.5},
        software_version="0.1.0",
        created=created,
    )


def _result(n: int = 3) -> SlideResult:
    rng = np.random.default_rng(0)
    tiles = pd.DataFrame(
        {
            "level": [0] * n,
            "x": np.arange(n) * 256,
            "y": [0] * n,
            "tissue_fraction": [0.9] * n,
            "attention": np.full(n, 1 / n),
        }
    )
    emb = rng.normal(size=8).astype(np.float32)
    return SlideResult(
        tiles=tiles,
        tile_embeddings=rng.normal(size=(n, 4)).astype(np.float32),
        slide_embedding=emb / np.linalg.norm(emb),
        pathways={"HALLMARK_HYPOXIA": PathwayScore(score=0.25, method="soft-knn", coverage=0.9)},
    )


def test_manifest_is_written_last_and_roundtrips() -> None:
    fake = FakeMinio()
    store = ResultStore(fake, "results")  # type: ignore[arg-type]
    sid = "ab" * 8
    assert not store.is_complete(sid, "v1")
    res = _result()
    uri = store.write(_manifest("v1", "2026-01-01T00:00:00.000Z"), res)
    assert uri == f"s3://results/slides/{sid}/v1/"
    assert fake.order[-1].endswith("manifest.json") and len(fake.order) == 5
    assert store.is_complete(sid, "v1")
    assert store.read_pathways(sid)["HALLMARK_HYPOXIA"].score == 0.25
    np.testing.assert_allclose(store.read_slide_embedding(sid), res.slide_embedding)
    emb16 = store.read_tile_embeddings(sid)
    assert emb16.dtype == np.float16
    np.testing.assert_allclose(emb16, res.tile_embeddings, atol=1e-2)
    assert list(store.read_tiles(sid)["x"]) == [0, 256, 512]
    assert store.read_manifest(sid).objects == sorted(
        ["tiles.parquet", "tile_embeddings.npy", "slide_embedding.npy", "pathways.json"]
    )


def test_latest_version_picks_newest_manifest_and_ignores_partial_prefixes() -> None:
    fake = FakeMinio()
    store = ResultStore(fake, "results")  # type: ignore[arg-type]
    sid = "ab" * 8
    store.write(_manifest("v2", "2026-02-01T00:00:00.000Z"), _result())
    store.write(_manifest("v1", "2026-01-01T00:00:00.000Z"), _result())
    fake.objects[f"slides/{sid}/v3/tiles.parquet"] = b"partial"  # a writer died: no manifest
    assert store.versions(sid) == ["v1", "v2"]
    assert store.latest_version(sid) == "v2"


def test_unknown_slide_is_not_found() -> None:
    store = ResultStore(FakeMinio(), "results")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="no result for slide"):
        store.read_pathways("0" * 16)


def test_write_rejects_tile_count_mismatch() -> None:
    res = _result()
    bad = SlideResult(res.tiles, res.tile_embeddings[:2], res.slide_embedding, res.pathways)
    with pytest.raises(ValueError, match="disagree"):
        ResultStore(FakeMinio(), "r").write(_manifest("v1", "x"), bad)  # type: ignore[arg-type]


def test_write_failure_records_the_error_alone_and_completes_the_prefix() -> None:
    fake = FakeMinio()
    store = ResultStore(fake, "results")  # type: ignore[arg-type]
    sid = "ab" * 8
    failed = _manifest("v1", "2026-01-01T00:00:00.000Z").model_copy(
        update={"status": "failed", "error": {"code": "truncated", "message": "frame 3 cut"}}
    )
    uri = store.write_failure(failed)
    assert uri == f"s3://results/slides/{sid}/v1/"
    assert fake.order == [f"slides/{sid}/v1/manifest.json"]
    assert store.is_complete(sid, "v1")
    back = store.read_manifest(sid)
    assert back.status == "failed" and back.error is not None
    assert back.error.code == "truncated" and back.objects == []


def test_write_failure_refuses_a_manifest_without_failure() -> None:
    store = ResultStore(FakeMinio(), "results")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status 'failed' and an error"):
        store.write_failure(_manifest("v1", "x"))
