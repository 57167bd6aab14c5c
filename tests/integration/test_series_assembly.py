"""Series assembly and the conditional result commit on the real local stack.

DICOM-WSI series uploaded as a gateway writes them: one object per instance, plain UID file
names, one S3 event each, no manifest.json. Each series must give exactly one result: in
shuffled order, interleaved with another series, across an ingest restart, with LABEL and
OVERVIEW instances present. Two processors of one slide give one result and one event.
All slides are SYNTHETIC (histoprompt.export.synthetic_wsi / synthetic_tiff).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoprompt.core import names
from histoprompt.core.genesets import load_hallmark
from histoprompt.core.results import ResultAlreadyCommitted, ResultStore, SlideResult
from histoprompt.core.s3 import put_if_absent, put_if_match
from histoprompt.core.schemas import (
    PathwayScore,
    ResultManifest,
    SeriesMember,
    series_slide_id,
)
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.export.synthetic_wsi import (
    DicomSeriesSpec,
    write_dicom_series,
    write_series_manifest,
)
from histoprompt.ingest.events import SlideJob
from histoprompt.ingest.kafka_io import KafkaResultSink
from histoprompt.ingest.pipeline import SlideProcessor
from histoprompt.ingest.publish import publish_outcome
from histoprompt.ingest.series import PENDING_PREFIX
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack.feed import (
    TopicWatcher,
    Uploaded,
    event_bytes,
    publish,
    put_bytes,
    put_file,
    results_of,
    skip_group_to_end,
)
from histoprompt.stack.ingest_demo import running_service
from histoprompt.wsi.instance_header import series_key_for
from histoprompt.wsi.triton import TritonClient

pytestmark = pytest.mark.integration

SETTLE_S = 1.5
TIMEOUT_S = 90.0


def _settings(stack, **kw: object) -> IngestSettings:  # noqa: ANN001
    """A fresh consumer group that starts at the end of the incoming topic."""
    group = f"series-test-{uuid.uuid4().hex[:8]}"
    values: dict[str, object] = {
        "ingest_group_id": group,
        "ingest_metrics_port": 0,
        "ingest_batch_size": 16,
        "ingest_concurrency": 4,
        "ingest_max_attempts": 2,
        "ingest_retry_base_s": 0.1,
        "ingest_shutdown_deadline_s": 10.0,
        "ingest_series_settle_s": SETTLE_S,
        **kw,
    }
    s = IngestSettings.load(stack.env_file, **values)
    skip_group_to_end(s, group)
    return s


class GatewaySeries:
    """A SYNTHETIC series as a gateway writes it: `<prefix>/<SOP-UID-like>.dcm` per instance."""

    def __init__(self, tmp: Path, bucket: str, *, levels: int = 2, extras: bool = False) -> None:
        import pydicom

        spec = DicomSeriesSpec(
            width=768, height=512, levels=levels, tile=256, with_label=extras, with_overview=extras
        )
        self.paths = write_dicom_series(tmp, spec)
        ds = pydicom.dcmread(self.paths[0], stop_before_pixels=True)
        self.series_key = series_key_for(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        self.bucket = bucket
        prefix = self.prefix = f"gateway/{uuid.uuid4().hex[:12]}"
        self.keys = [
            f"{prefix}/1.2.826.0.1.3680043.{uuid.uuid4().int % 10**12}.dcm" for _ in self.paths
        ]
        self.flavors = [
            str(pydicom.dcmread(p, stop_before_pixels=True).ImageType[2]) for p in self.paths
        ]
        self.uploaded: dict[str, Uploaded] = {}

    def put(self, minio, producer, i: int, data: bytes | None = None) -> None:  # noqa: ANN001
        key = self.keys[i]
        if data is None:
            up = put_file(minio, self.bucket, key, self.paths[i])
        else:
            up = put_bytes(minio, self.bucket, key, data)
        self.uploaded[key] = up
        publish(producer, event_bytes(up), key.encode())

    @property
    def slide_id(self) -> str:
        members = [
            SeriesMember(key=k, etag=self.uploaded[k].etag, size=self.uploaded[k].size, flavor=f)
            for k, f in zip(self.keys, self.flavors, strict=True)
        ]
        return series_slide_id(self.bucket, self.series_key, members)


def _pending(minio, bucket: str, series_key: str) -> list[str]:  # noqa: ANN001
    """The series' pending objects in the results bucket (ingest.series layout)."""
    prefix = f"{PENDING_PREFIX}{series_key}/"
    return [o.object_name for o in minio.list_objects(bucket, prefix=prefix, recursive=True)]


def _results_for(watcher: TopicWatcher, ids: set[str], quiet_s: float) -> list:
    """Result events for `ids`, once all have one, plus `quiet_s` more to catch duplicates."""
    watcher.wait_for(lambda s: ids <= {e.slide_id for e in results_of(s)}, timeout_s=TIMEOUT_S)
    end = time.monotonic() + quiet_s
    while time.monotonic() < end:
        watcher.poll(0.3)
    return [e for e in results_of(watcher.seen) if e.slide_id in ids]


def _instances(service, outcome: str) -> float:  # noqa: ANN001
    value = service.registry.get_sample_value(
        "histoprompt_ingest_series_instances_total", {"outcome": outcome}
    )
    return value or 0.0


def test_gateway_series_shuffled_interleaved_with_label_and_overview(
    stack,
    served_model,
    minio,
    producer,
    results: TopicWatcher,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    settings = _settings(stack)
    bucket = settings.slides_bucket
    a = GatewaySeries(tmp_path / "a", bucket, levels=3, extras=True)
    b = GatewaySeries(tmp_path / "b", bucket, levels=2, extras=True)
    assert a.flavors == ["VOLUME", "VOLUME", "VOLUME", "LABEL", "OVERVIEW"]
    # The OVERVIEW object is cut inside its pixel data (its header is whole): if anything
    # read its pixels, the slide would fail with `truncated`.
    overview = a.paths[4].read_bytes()[:-4096]
    order = [(a, i) for i in range(len(a.paths))] + [(b, i) for i in range(len(b.paths))]
    random.Random(16).shuffle(order)
    with running_service(settings, timeout_s=TIMEOUT_S) as service:
        t0 = time.monotonic()
        for series, i in order:
            series.put(minio, producer, i, overview if (series, i) == (a, 4) else None)
        events = _results_for(results, {a.slide_id, b.slide_id}, quiet_s=SETTLE_S + 2)
        elapsed = time.monotonic() - t0
        joined = _instances(service, "joined")
        # A late instance (a new object of a completed series): counted, no new slide.
        late_key = f"{b.prefix}/late-overview.dcm"
        late = put_file(minio, bucket, late_key, b.paths[-1])
        publish(producer, event_bytes(late), late_key.encode())
        deadline = time.monotonic() + 20
        while _instances(service, "late") < 1 and time.monotonic() < deadline:
            results.poll(0.3)
        assert _instances(service, "late") == 1
        results.poll(SETTLE_S + 1.0)
        assert not [e for e in results_of(results.seen) if e.source.key == late_key]
    by_id: dict[str, list] = {}
    for e in events:
        by_id.setdefault(e.slide_id, []).append(e)
    assert {k: len(v) for k, v in by_id.items()} == {a.slide_id: 1, b.slide_id: 1}
    for series in (a, b):
        (event,) = by_id[series.slide_id]
        assert event.status == "done", event
        assert event.n_tiles > 0
        assert event.source.key == series.keys[0]  # level 0 names the slide
        assert _pending(minio, settings.results_bucket, series.series_key) == []
    assert joined == len(a.paths) + len(b.paths)
    print(f"two gateway series, {len(order)} instances -> 2 results in {elapsed:.1f} s")


def test_gateway_series_survives_an_ingest_restart_mid_upload(
    stack,
    served_model,
    minio,
    producer,
    results: TopicWatcher,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    # A settle window longer than the restart: the series must not complete half-uploaded.
    settings = _settings(stack, ingest_series_settle_s=6.0)
    series = GatewaySeries(tmp_path / "r", settings.slides_bucket, levels=3, extras=True)
    first, rest = [3, 0], [1, 4, 2]
    with running_service(settings, timeout_s=TIMEOUT_S):
        for i in first:
            series.put(minio, producer, i)
        deadline = time.monotonic() + 20
        while len(_pending(minio, settings.results_bucket, series.series_key)) < len(first):
            assert time.monotonic() < deadline, "instances never became pending"
            time.sleep(0.2)
    # The worker is gone; its state is in S3. A new worker of the same group takes over.
    with running_service(settings, timeout_s=TIMEOUT_S, settle_s=1.0):
        for i in rest:
            series.put(minio, producer, i)
        events = _results_for(results, {series.slide_id}, quiet_s=3.0)
    assert [e.status for e in events] == ["done"]
    assert _pending(minio, settings.results_bucket, series.series_key) == []


def test_seaweedfs_honours_conditional_puts(minio, stack) -> None:  # noqa: ANN001
    """The store's answer to If-None-Match / If-Match, which the exclusive commit relies on."""
    bucket = stack.settings.results_bucket
    key = f"probe/{uuid.uuid4().hex}"
    first = put_if_absent(minio, bucket, key, b"one")
    assert first is not None
    assert put_if_absent(minio, bucket, key, b"two") is None
    assert put_if_match(minio, bucket, key, b"three", "0" * 32) is None
    assert put_if_match(minio, bucket, key, b"four", first) is not None
    resp = minio.get_object(bucket, key)
    assert resp.read() == b"four"
    resp.close()
    resp.release_conn()
    race = f"probe/{uuid.uuid4().hex}"
    barrier = threading.Barrier(8)
    won: list[str | None] = [None] * 8

    def contend(i: int) -> None:
        barrier.wait()
        won[i] = put_if_absent(minio, bucket, race, str(i).encode())

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(w is not None for w in won) == 1


def _fake_result(n: int, seed: int) -> SlideResult:
    """A SYNTHETIC result of `n` tiles, different per writer."""
    rng = np.random.default_rng(seed)
    tiles = pd.DataFrame(
        {
            "level": np.zeros(n, dtype=np.int32),
            "x": np.arange(n, dtype=np.int64) * 128,
            "y": np.zeros(n, dtype=np.int64),
            "tissue_fraction": np.ones(n, dtype=np.float32),
            "attention": np.full(n, 1.0 / n, dtype=np.float32),
        }
    )
    return SlideResult(
        tiles=tiles,
        tile_embeddings=rng.normal(size=(n, 8)).astype(np.float32),
        slide_embedding=rng.normal(size=4).astype(np.float32),
        pathways={"SYNTHETIC": PathwayScore(score=float(seed), method="soft_knn", coverage=1.0)},
    )


def test_concurrent_exclusive_writes_commit_one_result(minio, stack) -> None:  # noqa: ANN001
    """Writers racing on one slide through the real store: one commits, the rest raise
    ResultAlreadyCommitted, and every object under the prefix is the winner's."""
    store = ResultStore(minio, stack.settings.results_bucket)
    for _ in range(5):
        sid = uuid.uuid4().hex[:16]
        barrier = threading.Barrier(4)
        outcome: dict[int, str] = {}

        def write(
            i: int,
            sid: str = sid,
            barrier: threading.Barrier = barrier,
            outcome: dict[int, str] = outcome,
        ) -> None:
            manifest = ResultManifest(
                slide_id=sid,
                source={"bucket": "b", "key": f"writer-{i}", "etag": "e"},
                model={"name": "tiny", "version": "v1"},
                status="done",
                n_tiles=3 + i,
                seconds={"total": 1.0},
                software_version="test",
                synthetic=True,
            )
            barrier.wait()
            try:
                store.write(manifest, _fake_result(3 + i, i), exclusive=True)
                outcome[i] = "won"
            except ResultAlreadyCommitted:
                outcome[i] = "lost"

        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, o in outcome.items() if o == "won"]
        assert len(winners) == 1 and len(outcome) == 4, outcome
        manifest = store.read_manifest(sid, "v1")
        assert manifest.source.key == f"writer-{winners[0]}"
        assert len(store.read_tiles(sid, "v1")) == manifest.n_tiles
        assert store.read_pathways(sid, "v1")["SYNTHETIC"].score == winners[0]


def test_two_processors_on_one_slide_give_one_result_event(
    stack,
    served_model,
    minio,
    producer,
    results: TopicWatcher,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    """Two workers in two consumer groups get the same event at once and both process the
    slide: one result in S3, one result event; the other worker's outcome is a duplicate."""
    one, two = _settings(stack), _settings(stack)
    up = put_file(
        minio,
        one.slides_bucket,
        f"race/{uuid.uuid4().hex[:12]}/slide.svs",
        write_tiff(tmp_path / "race.svs", 1400, 1000),
    )
    with (
        running_service(one, timeout_s=TIMEOUT_S) as a,
        running_service(two, timeout_s=TIMEOUT_S) as b,
    ):
        publish(producer, event_bytes(up), up.key.encode())
        events = _results_for(results, {up.slide_id}, quiet_s=3.0)
        deadline = time.monotonic() + 30
        counts: list[float] = []
        while time.monotonic() < deadline:
            counts = [
                svc.registry.get_sample_value("histoprompt_ingest_slides_total", {"status": status})
                or 0.0
                for svc in (a, b)
                for status in ("done", "skipped_duplicate")
            ]
            if sum(counts) >= 2:
                break
            time.sleep(0.2)
    assert len(events) == 1 and events[0].status == "done"
    done_a, dup_a, done_b, dup_b = counts
    assert (done_a + done_b, dup_a + dup_b) == (1, 1), counts
    store = ResultStore(minio, one.results_bucket)
    assert store.versions(up.slide_id) == [events[0].model.version]


def test_gateway_series_with_a_manifest_is_closed_by_it(
    stack,  # noqa: ANN001
    served_model,  # noqa: ANN001
    minio,  # noqa: ANN001
    producer,  # noqa: ANN001
    results: TopicWatcher,
    tmp_path: Path,
) -> None:
    """Rule (a): instances pending under any names, then a manifest.json: one slide, the
    manifest's; the settle window never emits the series as a second one."""
    settle = 5.0
    settings = _settings(stack, ingest_series_settle_s=settle)
    bucket = settings.slides_bucket
    series = GatewaySeries(tmp_path / "m", bucket, levels=2, extras=True)
    with running_service(settings, timeout_s=TIMEOUT_S):
        for i in range(len(series.paths)):
            series.put(minio, producer, i)
        deadline = time.monotonic() + 20
        while len(_pending(minio, settings.results_bucket, series.series_key)) < len(series.paths):
            assert time.monotonic() < deadline, "instances never became pending"
            time.sleep(0.2)
        entries = [(k, p.stat().st_size) for k, p in zip(series.keys, series.paths, strict=True)]
        manifest = put_bytes(
            minio,
            bucket,
            f"{series.prefix}/{names.SERIES_MANIFEST}",
            write_series_manifest(entries),
        )
        publish(producer, event_bytes(manifest), manifest.key.encode())
        _results_for(results, {manifest.slide_id}, quiet_s=settle + 2.0)
    mine = [
        e for e in results_of(results.seen) if e.slide_id in {manifest.slide_id, series.slide_id}
    ]
    assert [(e.slide_id, e.status) for e in mine] == [(manifest.slide_id, "done")]
    assert _pending(minio, settings.results_bucket, series.series_key) == []


def test_two_slide_processors_at_once_commit_one_result(
    stack,  # noqa: ANN001
    served_model,  # noqa: ANN001
    minio,  # noqa: ANN001
    results: TopicWatcher,
    tmp_path: Path,
) -> None:
    """The race itself, deterministic: two SlideProcessors (real S3, real Triton) start the
    same slide together, so both pass the is-it-done check before either writes. One commits
    and publishes; the other's outcome is skipped_duplicate and publishes nothing."""
    settings = _settings(stack)
    up = put_file(
        minio,
        settings.slides_bucket,
        f"race/{uuid.uuid4().hex[:12]}/slide.svs",
        write_tiff(tmp_path / "race2.svs", 1400, 1000),
    )
    job = SlideJob(up.bucket, up.key, up.etag, up.size, "single")
    store = ResultStore(minio, settings.results_bucket)
    sink = KafkaResultSink(settings)

    async def race() -> list[str]:
        triton = TritonClient(settings.triton_url, 60.0, 1, 0.1)
        try:
            served = await triton.served_model()
            gene_sets = list(load_hallmark())
            procs = [
                SlideProcessor(settings, minio, store, triton, served, gene_sets) for _ in range(2)
            ]
            outcomes = await asyncio.gather(*(p.process(job) for p in procs))
        finally:
            await triton.close()
        for outcome in outcomes:
            publish_outcome(sink, job, outcome)
        return sorted(o.status for o in outcomes)

    try:
        statuses = asyncio.run(race())
    finally:
        sink.close()
    assert statuses == ["done", "skipped_duplicate"]
    events = _results_for(results, {up.slide_id}, quiet_s=2.0)
    assert len(events) == 1 and events[0].status == "done"
    assert len(store.versions(up.slide_id)) == 1
