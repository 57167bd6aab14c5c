"""The ingest service on the real local stack: Kafka events -> S3 ranged reads -> Triton ->
results in S3 + result events; redelivery, poison and DLQ, PHI, SIGTERM with restart."""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers.ingest_logs import capture_ingest_logs

from histoprompt.core import names
from histoprompt.core.results import ResultStore
from histoprompt.core.schemas import DlqEvent
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.export.synthetic_tiles import blank_tiles
from histoprompt.export.synthetic_wsi import (
    DicomSeriesSpec,
    TransferSyntax,
    write_dicom_series,
    write_non_wsi_dicom,
)
from histoprompt.ingest.service import IngestService
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack.feed import (
    TopicWatcher,
    Uploaded,
    dlq_of,
    event_bytes,
    publish,
    publish_upload,
    put_bytes,
    put_file,
    results_of,
    skip_group_to_end,
    upload_series,
)
from histoprompt.stack.ingest_demo import running_service

pytestmark = pytest.mark.integration

PHI = {"PatientName": "DOE^JANE^SYNTH", "PatientID": "MRN-99812345", "PatientBirthDate": "19610407"}
TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def settings(stack, served_model) -> IngestSettings:  # noqa: ANN001
    group = f"ingest-test-{uuid.uuid4().hex[:8]}"
    s = IngestSettings.load(
        stack.env_file,
        ingest_group_id=group,
        ingest_metrics_port=stack.ingest_metrics_port,
        ingest_batch_size=16,
        ingest_max_inflight=3,
        ingest_concurrency=2,
        ingest_max_attempts=2,
        ingest_retry_base_s=0.1,
        ingest_max_pixels=3000 * 3000,
        ingest_shutdown_deadline_s=10.0,
        # single DICOM files are one-instance series: completed after the settle window
        ingest_series_settle_s=2.0,
    )
    skip_group_to_end(s, group)
    return s


@pytest.fixture(scope="module")
def log_capture() -> Iterator[io.StringIO]:
    with capture_ingest_logs() as buf:
        yield buf


@pytest.fixture(scope="module")
def service(settings: IngestSettings, log_capture: io.StringIO) -> Iterator[IngestService]:
    # Ready (3 s more for the consumer to join its group before events arrive); on exit
    # stopped, joined, and an error if its thread outlives the shutdown deadline.
    with running_service(
        settings,
        timeout_s=TIMEOUT_S,
        settle_s=3.0,
        diagnostics=lambda: log_capture.getvalue()[-3000:],
    ) as svc:
        yield svc


def _skipped_duplicates(service: IngestService) -> float:
    """The service's histoprompt_ingest_slides_total{status="skipped_duplicate"}."""
    value = service.registry.get_sample_value(
        "histoprompt_ingest_slides_total", {"status": "skipped_duplicate"}
    )
    assert value is not None, "the slides counter has no skipped_duplicate sample"
    return value


def _prefix() -> str:
    return f"ingest-test/{uuid.uuid4().hex[:12]}"


def _wait_results(watcher: TopicWatcher, ids: set[str], timeout: float = TIMEOUT_S) -> dict:
    seen = watcher.wait_for(lambda s: ids <= {e.slide_id for e in results_of(s)}, timeout_s=timeout)
    by_id = {e.slide_id: e for e in results_of(seen) if e.slide_id in ids}
    assert set(by_id) == ids, f"missing results for {ids - set(by_id)}"
    return by_id


def _series(tmp: Path, **kw: object) -> list[Path]:
    spec = DicomSeriesSpec(width=1024, height=768, levels=3, tile=256, **kw)  # type: ignore[arg-type]
    return write_dicom_series(tmp, spec)


def test_series_and_svs_give_results_and_events(
    service: IngestService,
    minio,  # noqa: ANN001
    producer,  # noqa: ANN001
    results: TopicWatcher,
    settings: IngestSettings,
    stack,  # noqa: ANN001
    tmp_path: Path,
    log_capture: io.StringIO,
) -> None:
    bucket = settings.slides_bucket
    series = upload_series(
        minio,
        bucket,
        _prefix(),
        _series(tmp_path / "s", syntax=TransferSyntax.jpeg_baseline, phi=PHI, with_label=True),
    )
    sparse = upload_series(
        minio,
        bucket,
        _prefix(),
        _series(tmp_path / "j2k", syntax=TransferSyntax.jpeg2000, sparse=True, phi=PHI),
    )
    svs = put_file(
        minio, bucket, _prefix() + "/slide.svs", write_tiff(tmp_path / "x.svs", 1200, 900)
    )
    for up in (series, sparse, svs):
        publish_upload(producer, up)
    ids = {series.slide_id, sparse.slide_id, svs.slide_id}
    events = _wait_results(results, ids)
    store = ResultStore(minio, settings.results_bucket)
    version = service.served.version  # type: ignore[union-attr]
    from histoprompt.core.genesets import load_hallmark

    hallmarks = set(load_hallmark())
    for sid, ev in events.items():
        assert ev.status == "done", ev
        assert ev.model.version == version
        assert ev.result_uri == store.uri(sid, version)
        assert ev.n_tiles > 0
        assert ev.seconds.total >= ev.seconds.infer > 0
        manifest = store.read_manifest(sid, version)
        assert manifest.status == "done" and manifest.synthetic
        assert manifest.n_tiles == ev.n_tiles
        tiles = store.read_tiles(sid, version)
        emb = store.read_tile_embeddings(sid, version)
        assert len(tiles) == ev.n_tiles == emb.shape[0]
        assert emb.shape[1] == service.served.spec.embed_dim  # type: ignore[union-attr]
        assert np.isfinite(emb.astype(np.float32)).all() and np.abs(emb).sum() > 0
        slide_emb = store.read_slide_embedding(sid, version)
        assert abs(float(np.linalg.norm(slide_emb)) - 1.0) < 1e-4
        assert tiles["attention"].sum() == pytest.approx(1.0, abs=1e-3)
        assert (tiles["tissue_fraction"] >= settings.ingest_min_tissue_fraction).all()
        # level-0 coordinates on the tile grid: tile edge = 64 px at 1.0 mpp = 128 px at 0.5
        assert (tiles["x"] % 128 == 0).all() and (tiles["y"] % 128 == 0).all()
        pathways = store.read_pathways(sid, version)
        assert set(pathways) == hallmarks
        assert all(np.isfinite(p.score) and 0 <= p.coverage <= 1 for p in pathways.values())
        assert all(p.percentile is not None and 0 <= p.percentile <= 100 for p in pathways.values())
        assert all(p.z is not None and np.isfinite(p.z) for p in pathways.values())
    # JPEG DICOM and lossless sparse J2K of the same picture give the same tile grid
    a = store.read_tiles(series.slide_id, version)
    b = store.read_tiles(sparse.slide_id, version)
    assert list(zip(a["x"], a["y"], strict=True)) == list(zip(b["x"], b["y"], strict=True))

    # metrics on the scraped port carry the outcome, never keys or PHI
    text = httpx.get(f"http://127.0.0.1:{stack.ingest_metrics_port}/metrics").text
    done = [
        ln
        for ln in text.splitlines()
        if ln.startswith('histoprompt_ingest_slides_total{status="done"}')
    ]
    assert float(done[0].split()[-1]) >= 3
    tiles_total = [
        ln for ln in text.splitlines() if ln.startswith("histoprompt_ingest_tiles_total ")
    ]
    assert float(tiles_total[0].split()[-1]) >= sum(e.n_tiles for e in events.values())

    # PHI: nowhere in logs, metrics, result objects or result events
    blobs = [log_capture.getvalue(), text]
    blobs += [v.decode() for _, v in results.seen]
    for sid in (series.slide_id, sparse.slide_id):
        prefix = names.result_prefix(sid, version)
        for obj in minio.list_objects(settings.results_bucket, prefix=prefix, recursive=True):
            resp = minio.get_object(settings.results_bucket, obj.object_name)
            blobs.append(resp.read().decode("latin-1"))
            resp.close()
            resp.release_conn()
    for value in PHI.values():
        for part in value.split("^"):
            assert all(part not in blob for blob in blobs), f"PHI {part!r} leaked"
    assert "slide_id" in log_capture.getvalue()


def test_redelivery_gives_no_second_result(
    service: IngestService,
    minio,  # noqa: ANN001
    producer,  # noqa: ANN001
    results: TopicWatcher,
    settings: IngestSettings,
    tmp_path: Path,
) -> None:
    up = put_file(
        minio,
        settings.slides_bucket,
        _prefix() + "/a.svs",
        write_tiff(tmp_path / "a.svs", 700, 600),
    )
    publish_upload(producer, up)
    _wait_results(results, {up.slide_id})
    before = _skipped_duplicates(service)
    publish(producer, event_bytes(up), up.key.encode())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        results.poll(0.5)
        if _skipped_duplicates(service) > before:
            break
    assert _skipped_duplicates(service) == before + 1
    results.poll(1.0)
    assert [e.slide_id for e in results_of(results.seen)].count(up.slide_id) == 1


def test_poison_goes_to_dlq_bad_slides_fail_and_next_slide_completes(
    service: IngestService,
    minio,  # noqa: ANN001
    producer,  # noqa: ANN001
    results: TopicWatcher,
    dlq: TopicWatcher,
    settings: IngestSettings,
    tmp_path: Path,
) -> None:
    bucket = settings.slides_bucket
    forbidden = event_bytes(Uploaded("not-an-allowed-bucket", "x/slide.svs", "e", 1))
    _POISON.update(hashlib.sha256(v).hexdigest() for v in (b"{this is not json", forbidden))
    publish(producer, b"{this is not json", b"poison-1")
    publish(producer, forbidden)
    not_dicom = put_bytes(minio, bucket, _prefix() + "/junk.dcm", b"\0" * 128 + b"NOPE" * 100)
    good_series = _series(tmp_path / "g", syntax=TransferSyntax.jpegls)
    data = good_series[0].read_bytes()
    truncated = put_bytes(minio, bucket, _prefix() + "/trunc.dcm", data[: len(data) * 2 // 3])
    big = write_dicom_series(
        tmp_path / "big",
        DicomSeriesSpec(width=3200, height=3000, levels=1, tile=512, syntax=TransferSyntax.jpegls),
    )
    too_large = put_file(minio, bucket, _prefix() + "/big.dcm", big[0])
    missing = upload_series(minio, bucket, _prefix(), good_series, skip=[1])
    blank = write_dicom_series(
        tmp_path / "blank", DicomSeriesSpec(width=512, height=512, levels=1), tile_fn=blank_tiles
    )
    no_tissue = put_file(minio, bucket, _prefix() + "/blank.dcm", blank[0])
    ct = write_non_wsi_dicom(tmp_path / "ct.dcm")
    not_wsi = put_file(minio, bucket, _prefix() + "/ct.dcm", ct)
    bad = {
        not_dicom.slide_id: "not_dicom",
        truncated.slide_id: "truncated",
        too_large.slide_id: "too_large",
        missing.slide_id: "missing_instance",
        no_tissue.slide_id: "no_tissue",
        not_wsi.slide_id: "not_wsi",
    }
    for up in (not_dicom, truncated, too_large, missing, no_tissue, not_wsi):
        publish_upload(producer, up, with_members=False)
    good = put_file(minio, bucket, _prefix() + "/ok.svs", write_tiff(tmp_path / "ok.svs", 800, 640))
    publish_upload(producer, good)

    events = _wait_results(results, {*bad, good.slide_id})
    assert events[good.slide_id].status == "done"
    for sid, code in bad.items():
        assert events[sid].status == "failed", (code, events[sid])
        assert events[sid].error is not None and events[sid].error.code == code
    seen = dlq.wait_for(lambda s: len(_mine(dlq_of(s))) >= 2, timeout_s=30)
    mine = _mine(dlq_of(seen))
    assert sorted(e.error.code for e in mine) == ["forbidden_source", "malformed_event"]
    malformed = next(e for e in mine if e.error.code == "malformed_event")
    assert malformed.attempts == 1

    # A permanent failure is recorded as a "failed" manifest with its error, so a redelivered
    # event for that slide is a duplicate, not a second failed result.
    store = ResultStore(minio, settings.results_bucket)
    failed = store.read_manifest(truncated.slide_id)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "truncated" and failed.objects == []
    assert events[truncated.slide_id].result_uri == store.uri(
        truncated.slide_id, failed.model.version
    )
    before = _skipped_duplicates(service)
    publish_upload(producer, truncated, with_members=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _skipped_duplicates(service) == before:
        results.poll(0.5)
    assert _skipped_duplicates(service) == before + 1
    results.poll(1.0)
    assert [e.slide_id for e in results_of(results.seen)].count(truncated.slide_id) == 1


_POISON: set[str] = set()


def _mine(events: list[DlqEvent]) -> list[DlqEvent]:
    """DLQ events of this test (other tests in the session may publish poison too), told by
    their incoming values' fingerprints: a DLQ record does not keep the value itself."""
    return [e for e in events if e.incoming is not None and e.incoming.sha256 in _POISON]
