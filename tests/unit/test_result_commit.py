"""ResultStore's exclusive commit against an in-memory S3 with conditional PUTs (the real
stores, SeaweedFS and MinIO, are checked in tests/integration/test_series_assembly.py)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from test_series_assembler import FakeS3

from histoprompt.core import names
from histoprompt.core.results import WRITER_LEASE, ResultAlreadyCommitted, ResultStore, SlideResult
from histoprompt.core.schemas import PathwayScore, ResultManifest

BUCKET = "results"


def _manifest(writer: str) -> ResultManifest:
    return ResultManifest(
        slide_id="ab" * 8,
        source={"bucket": "s", "key": writer, "etag": "e"},
        model={"name": "tiny", "version": "v1"},
        status="done",
        n_tiles=2,
        seconds={"total": 1.0},
        software_version="test",
        synthetic=True,
    )


def _result(score: float) -> SlideResult:
    """A SYNTHETIC two-tile result."""
    tiles = pd.DataFrame(
        {
            "level": np.zeros(2, dtype=np.int32),
            "x": np.array([0, 128], dtype=np.int64),
            "y": np.zeros(2, dtype=np.int64),
            "tissue_fraction": np.ones(2, dtype=np.float32),
            "attention": np.full(2, 0.5, dtype=np.float32),
        }
    )
    return SlideResult(
        tiles=tiles,
        tile_embeddings=np.ones((2, 4), dtype=np.float32),
        slide_embedding=np.ones(4, dtype=np.float32),
        pathways={"SYNTHETIC": PathwayScore(score=score, method="soft_knn", coverage=1.0)},
    )


def test_a_second_exclusive_writer_writes_nothing() -> None:
    s3 = FakeS3()
    store = ResultStore(s3, BUCKET)  # type: ignore[arg-type]
    store.write(_manifest("first"), _result(1.0), exclusive=True)
    with pytest.raises(ResultAlreadyCommitted) as info:
        store.write(_manifest("second"), _result(2.0), exclusive=True)
    assert info.value.code == "already_committed"
    assert store.read_manifest("ab" * 8, "v1").source.key == "first"
    assert store.read_pathways("ab" * 8, "v1")["SYNTHETIC"].score == 1.0
    with pytest.raises(ResultAlreadyCommitted):
        store.write_failure(
            _manifest("third").model_copy(
                update={"status": "failed", "error": {"code": "truncated", "message": "x"}}
            ),
            exclusive=True,
        )


def test_a_dead_writers_lease_is_taken_over_after_lease_s() -> None:
    s3 = FakeS3()
    lease = names.result_key("ab" * 8, "v1", WRITER_LEASE)
    s3.put(BUCKET, lease, b'{"token": "dead"}')  # a writer that died before its manifest
    store = ResultStore(s3, BUCKET, lease_s=0.3)  # type: ignore[arg-type]
    t0 = time.monotonic()
    store.write(_manifest("survivor"), _result(3.0), exclusive=True)
    assert time.monotonic() - t0 >= 0.3  # it waited for the lease to go stale first
    assert store.read_manifest("ab" * 8, "v1").source.key == "survivor"
