"""SeriesAssembler's rules against an in-memory S3 with conditional PUTs: one emitter when
workers tick together, settle timing, late and redelivered instances, a claim left unfinished
by a dead worker published again. Instances are SYNTHETIC DICOM-WSI files; the real store is
covered by tests/integration/test_series_assembly.py."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from histoprompt.core.schemas import SeriesReady
from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series
from histoprompt.ingest.events import SlideJob
from histoprompt.ingest.series import PENDING_PREFIX, SeriesAssembler
from histoprompt.ingest.settings import IngestSettings

SLIDES, RESULTS = "slides", "results"


@dataclass
class _Info:
    object_name: str
    size: int
    etag: str
    last_modified: datetime


class FakeS3:
    """Objects with etags and LastModified; If-None-Match / If-Match as S3 answers them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, datetime]] = {}
        self.lock = threading.Lock()

    def _error(self, code: str, key: str) -> Exception:
        from minio.error import S3Error

        return S3Error(None, code, code, key, "r", "h")  # type: ignore[arg-type]

    def put(self, bucket: str, key: str, data: bytes, age_s: float = 0.0) -> None:
        stamp = datetime.fromtimestamp(time.time() - age_s, UTC)
        with self.lock:
            self.objects[(bucket, key)] = (data, stamp)

    def put_object(self, bucket: str, key: str, data: Any, length: int, **kw: Any) -> None:
        self.put(bucket, key, data.read(length))

    def _put_object(self, bucket: str, key: str, data: bytes, headers: dict[str, Any]) -> Any:
        with self.lock:
            current = self.objects.get((bucket, key))
            if headers.get("If-None-Match") == "*" and current is not None:
                raise self._error("PreconditionFailed", key)
            match = headers.get("If-Match")
            if match is not None and (current is None or _etag(current[0]) != match.strip('"')):
                raise self._error("PreconditionFailed", key)
            self.objects[(bucket, key)] = (data, datetime.now(UTC))

        @dataclass
        class _Result:
            etag: str

        return _Result(_etag(data))

    def get_object(self, bucket: str, key: str, offset: int = 0, length: int = 0) -> Any:
        if (bucket, key) not in self.objects:
            raise self._error("NoSuchKey", key)
        data = self.objects[(bucket, key)][0]
        body = io.BytesIO(data[offset : offset + length] if length else data[offset:])
        body.release_conn = lambda: None  # type: ignore[attr-defined]
        return body

    def stat_object(self, bucket: str, key: str) -> _Info:
        if (bucket, key) not in self.objects:
            raise self._error("NoSuchKey", key)
        data, stamp = self.objects[(bucket, key)]
        return _Info(key, len(data), _etag(data), stamp)

    def list_objects(self, bucket: str, prefix: str = "", recursive: bool = False) -> list[_Info]:
        with self.lock:
            found = [(k, v) for (b, k), v in self.objects.items() if b == bucket]
        return [_Info(k, len(d), _etag(d), t) for k, (d, t) in found if k.startswith(prefix)]

    def remove_object(self, bucket: str, key: str) -> None:
        with self.lock:
            self.objects.pop((bucket, key), None)

    def age(self, bucket: str, prefix: str, seconds: float) -> None:
        """Make every object under `prefix` `seconds` older (the settle window passing)."""
        with self.lock:
            for (b, k), (d, t) in list(self.objects.items()):
                if b == bucket and k.startswith(prefix):
                    self.objects[(b, k)] = (d, datetime.fromtimestamp(t.timestamp() - seconds, UTC))


def _etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - an S3 ETag


class Emitted(list[SeriesReady]):
    def __call__(self, key: bytes, value: bytes) -> None:
        self.append(SeriesReady.model_validate_json(value))


@pytest.fixture
def settings() -> IngestSettings:
    return IngestSettings(  # type: ignore[call-arg]
        _env_file=None, slides_bucket=SLIDES, results_bucket=RESULTS, ingest_series_settle_s=30.0
    )


@pytest.fixture(scope="module")
def series_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    spec = DicomSeriesSpec(width=512, height=384, levels=2, tile=128, with_label=True)
    return write_dicom_series(tmp_path_factory.mktemp("series"), spec)


def _assembler(settings: IngestSettings) -> tuple[FakeS3, Emitted, SeriesAssembler]:
    """An assembler on a fresh in-memory S3, and the list of what it emits."""
    s3, emitted = FakeS3(), Emitted()
    return s3, emitted, SeriesAssembler(settings, s3, emitted)  # type: ignore[arg-type]


def _upload(s3: FakeS3, files: list[Path], prefix: str = "gw") -> list[SlideJob]:
    jobs = []
    for i, path in enumerate(files):
        key = f"{prefix}/1.2.3.{i}.dcm"
        data = path.read_bytes()
        s3.put(SLIDES, key, data)
        jobs.append(SlideJob(SLIDES, key, _etag(data), len(data), "single"))
    return jobs


def test_instances_wait_for_the_settle_window_then_one_series(
    settings: IngestSettings, series_files: list[Path]
) -> None:
    s3, emitted, asm = _assembler(settings)
    jobs = _upload(s3, series_files)
    assert [asm.observe(j) for j in jobs] == ["joined"] * 3
    assert asm.tick(now=time.time()) == 0 and emitted == []  # not quiet for 30 s yet
    assert asm.tick(now=time.time() + 31) == 1
    (ready,) = emitted
    assert sorted(m.key for m in ready.members) == sorted(j.key for j in jobs)
    assert sorted(m.flavor for m in ready.members) == ["LABEL", "VOLUME", "VOLUME"]
    assert not s3.list_objects(RESULTS, PENDING_PREFIX)
    # a redelivered instance is a duplicate, a new object of the series is late
    assert asm.observe(jobs[0]) == "duplicate"
    late = _upload(s3, series_files[:1], prefix="gw-late")[0]
    assert asm.observe(late) == "late"
    assert asm.tick(now=time.time() + 100) == 0 and len(emitted) == 1


def test_workers_ticking_together_emit_once(
    settings: IngestSettings, series_files: list[Path]
) -> None:
    s3, emitted = FakeS3(), Emitted()
    workers = [SeriesAssembler(settings, s3, emitted) for _ in range(4)]  # type: ignore[arg-type]
    for job in _upload(s3, series_files):
        workers[0].observe(job)
    barrier = threading.Barrier(len(workers))
    later = time.time() + 31

    def tick(asm: SeriesAssembler) -> None:
        barrier.wait()
        asm.tick(now=later)

    threads = [threading.Thread(target=tick, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(emitted) == 1


def test_a_claim_left_unfinished_is_published_again(
    settings: IngestSettings, series_files: list[Path]
) -> None:
    s3 = FakeS3()

    def dead(key: bytes, value: bytes) -> None:
        raise OSError("the worker died between its claim and its publish")

    first = SeriesAssembler(settings, s3, dead)  # type: ignore[arg-type]
    for job in _upload(s3, series_files):
        first.observe(job)
    assert first.tick(now=time.time() + 31) == 0  # claimed, not published, pending kept
    assert len(s3.list_objects(RESULTS, PENDING_PREFIX)) == 3
    emitted = Emitted()
    second = SeriesAssembler(settings, s3, emitted)  # type: ignore[arg-type]
    assert second.tick(now=time.time() + 31) == 0  # the claim is fresh: its worker may live
    s3.age(RESULTS, "series/", 31)
    assert second.tick(now=time.time() + 62) == 1
    assert len(emitted) == 1 and not s3.list_objects(RESULTS, PENDING_PREFIX)
    assert second.tick(now=time.time() + 100) == 0


def test_a_non_wsi_object_is_left_to_the_single_file_path(settings: IngestSettings) -> None:
    s3 = FakeS3()
    s3.put(SLIDES, "x/slide.svs", b"II*\0" + b"\0" * 400)
    asm = SeriesAssembler(settings, s3, Emitted())  # type: ignore[arg-type]
    assert asm.observe(SlideJob(SLIDES, "x/slide.svs", "e", 404, "single")) is None
    assert not s3.list_objects(RESULTS, PENDING_PREFIX)


def _manifest_job(s3: FakeS3, jobs: list[SlideJob], prefix: str = "gw") -> SlideJob:
    from histoprompt.export.synthetic_wsi import write_series_manifest

    data = write_series_manifest([(j.key, j.size) for j in jobs])
    key = f"{prefix}/manifest.json"
    s3.put(SLIDES, key, data)
    return SlideJob(SLIDES, key, _etag(data), len(data), "series")


def test_a_manifest_closes_the_pending_instances_it_lists(
    settings: IngestSettings, series_files: list[Path]
) -> None:
    s3, emitted, asm = _assembler(settings)
    jobs = _upload(s3, series_files)
    for job in jobs:
        asm.observe(job)
    asm.close_by_manifest(_manifest_job(s3, jobs))
    assert not s3.list_objects(RESULTS, PENDING_PREFIX)
    assert asm.tick(now=time.time() + 100) == 0 and emitted == []
    assert asm.observe(jobs[1]) == "duplicate"  # its notification after the manifest's


def test_a_manifest_leaves_pending_copies_it_does_not_list(
    settings: IngestSettings, series_files: list[Path]
) -> None:
    """The same instance stored twice (e.g. a copy under another key) and a manifest that
    lists only its own objects: the copy is not silently dropped."""
    s3, emitted, asm = _assembler(settings)
    copy = _upload(s3, series_files[:1], prefix="copy")[0]
    asm.observe(copy)
    asm.close_by_manifest(_manifest_job(s3, _upload(s3, series_files)))
    assert len(s3.list_objects(RESULTS, PENDING_PREFIX)) == 1
    assert asm.tick(now=time.time() + 100) == 1
    assert [m.key for m in emitted[0].members] == [copy.key]


def test_a_stored_instance_whose_event_is_late_joins_before_the_claim(
    settings: IngestSettings, series_files: list[Path], tmp_path: Path
) -> None:
    """The third instance is in the bucket but its notification is stuck (a dead worker's
    partition, an outage's retries) past the settle window: the claim's folder sweep finds
    it, so the slide is whole, and its notification later is a redelivery. Another series
    in the same folder stays out."""
    s3, emitted, asm = _assembler(settings)
    jobs = _upload(s3, series_files)
    other_spec = DicomSeriesSpec(width=256, height=256, levels=1, tile=128)
    (other,) = write_dicom_series(tmp_path / "other", other_spec)
    s3.put(SLIDES, "gw/other-series.dcm", other.read_bytes())
    assert [asm.observe(j) for j in jobs[:2]] == ["joined"] * 2
    assert asm.tick(now=time.time() + 31) == 1
    (ready,) = emitted
    assert sorted(m.key for m in ready.members) == sorted(j.key for j in jobs)
    assert asm.observe(jobs[2]) == "duplicate"
    assert not s3.list_objects(RESULTS, PENDING_PREFIX)
