"""A worker that died between committing a result and its event: the redelivery of that
same message announces the stored result again (one result, the event at least once); any
other delivery of the slide stays a plain duplicate with no event."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry
from test_series_assembler import FakeS3

from histoprompt.core import names
from histoprompt.core.results import ResultStore
from histoprompt.core.schemas import (
    ErrorInfo,
    ModelRef,
    ResultManifest,
    S3Event,
    SourceRef,
    Timings,
)
from histoprompt.ingest.events import SlideJob
from histoprompt.ingest.handler import MessageHandler
from histoprompt.ingest.memory_io import InMemoryDeliveryLog, InMemoryResultSink
from histoprompt.ingest.metrics import make_metrics
from histoprompt.ingest.pipeline import SlideOutcome, announce_again
from histoprompt.ingest.ports import Message
from histoprompt.ingest.publish import publish_outcome
from histoprompt.ingest.settings import IngestSettings

VERSION = "tiny-v1"
FIRST = "ingest/histoprompt.slides.incoming/2/17"


def _job(delivery: str) -> SlideJob:
    return SlideJob("slides", "x/a.svs", "e1", 10, "single", delivery=delivery)


def _store_written_by(delivery: str) -> ResultStore:
    store = ResultStore(FakeS3(), "results")  # type: ignore[arg-type]
    job = _job(delivery)
    store.write_failure(
        ResultManifest(
            slide_id=job.slide_id,
            source=SourceRef(bucket=job.bucket, key=job.key, etag=job.etag),
            model=ModelRef(name="tiny", version=VERSION),
            status="failed",
            n_tiles=0,
            seconds=Timings(total=0.5),
            software_version="test",
            synthetic=True,
            error=ErrorInfo(code="not_wsi", message="SYNTHETIC bytes"),
            written_by=delivery,
        ),
        exclusive=True,
    )
    return store


def test_the_delivery_that_wrote_the_result_announces_it_again() -> None:
    store = _store_written_by(FIRST)
    again = announce_again(store, _job(FIRST), VERSION)
    assert again is not None and again.status == "failed"
    assert again.result_uri == store.uri(_job(FIRST).slide_id, VERSION)
    sink = InMemoryResultSink()
    assert publish_outcome(sink, _job(FIRST), again)
    [event] = sink.results
    assert (event.slide_id, event.status, event.error) == (
        _job(FIRST).slide_id,
        "failed",
        ErrorInfo(code="not_wsi", message="SYNTHETIC bytes"),
    )


def test_another_delivery_of_the_slide_is_a_plain_duplicate() -> None:
    store = _store_written_by(FIRST)
    assert announce_again(store, _job("ingest/histoprompt.slides.incoming/2/18"), VERSION) is None
    assert announce_again(store, _job(""), VERSION) is None


class Recorder:
    """A processor that records the jobs it is given."""

    def __init__(self) -> None:
        self.jobs: list[SlideJob] = []

    async def process(self, job: SlideJob) -> SlideOutcome:
        self.jobs.append(job)
        return SlideOutcome("skipped_duplicate")


def test_the_handler_names_each_job_after_its_delivery() -> None:
    settings = IngestSettings.model_validate(
        {"slides_bucket": "slides", "ingest_metrics_port": 0, "ingest_group_id": "g"}
    )
    value = json.dumps(S3Event.make("slides", "x/a.svs", 10, "e1")).encode()
    msg = Message(value, None, names.TOPIC_INCOMING, 3, 99)
    proc = Recorder()
    metrics = make_metrics(CollectorRegistry())
    handler = MessageHandler(settings, InMemoryResultSink(), proc, InMemoryDeliveryLog(), metrics)
    asyncio.run(handler.handle(msg))
    assert [j.delivery for j in proc.jobs] == [f"g/{names.TOPIC_INCOMING}/3/99"]
