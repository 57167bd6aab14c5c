"""SeriesReady messages into `instances` jobs, and the assembled series' slide_id."""

from __future__ import annotations

import pytest

from histoprompt.core.schemas import SeriesMember, SeriesReady, series_slide_id, slide_id_for
from histoprompt.ingest.errors import SourceRejectedError
from histoprompt.ingest.events import SlideJob, parse_jobs
from histoprompt.ingest.settings import IngestSettings
from histoprompt.wsi.instance_header import series_key_for

SERIES = series_key_for("1.2.3", "1.2.3.4")


@pytest.fixture
def settings() -> IngestSettings:
    return IngestSettings(_env_file=None, slides_bucket="slides")  # type: ignore[call-arg]


def _members() -> list[SeriesMember]:
    return [
        SeriesMember(key="gw/1.2.840.9.dcm", etag="e1", size=900, flavor="VOLUME"),
        SeriesMember(key="gw/1.2.840.7.dcm", etag="e2", size=300, flavor="VOLUME"),
        SeriesMember(key="gw/1.2.840.5.dcm", etag="e3", size=50, flavor="LABEL"),
        SeriesMember(key="gw/1.2.840.3.dcm", etag="e4", size=60, flavor="OVERVIEW"),
    ]


def _ready(members: list[SeriesMember], bucket: str = "slides") -> bytes:
    sid = series_slide_id(bucket, SERIES, members)
    msg = SeriesReady(
        bucket=bucket, series_key=SERIES, slide_id=sid, trigger="settle", members=members
    )
    return msg.to_json()


def test_series_ready_is_one_instances_job(settings: IngestSettings) -> None:
    members = _members()
    (job,) = parse_jobs(_ready(members), settings)
    assert isinstance(job, SlideJob) and job.kind == "instances"
    assert job.key == "gw/1.2.840.9.dcm" and job.etag == "e1"  # the largest VOLUME
    assert job.slide_id == series_slide_id("slides", SERIES, members)
    # the reader gets the VOLUME instances only: LABEL and OVERVIEW pixels are never read
    assert sorted(job.readable_members()) == [("gw/1.2.840.7.dcm", 300), ("gw/1.2.840.9.dcm", 900)]


def test_series_slide_id_ignores_order_and_names_but_not_etags() -> None:
    members = _members()
    sid = series_slide_id("slides", SERIES, members)
    assert series_slide_id("slides", SERIES, members[::-1]) == sid
    renamed = [m.model_copy(update={"key": "other/" + m.key}) for m in members]
    assert series_slide_id("slides", SERIES, renamed) == sid
    rewritten = [members[0].model_copy(update={"etag": "new"}), *members[1:]]
    assert series_slide_id("slides", SERIES, rewritten) != sid
    assert series_slide_id("slides", series_key_for("1.2.3", "9.9"), members) != sid
    assert len(sid) == 16 and SERIES not in sid


def test_one_instance_series_keeps_the_objects_slide_id(settings: IngestSettings) -> None:
    (only,) = _members()[:1]
    (job,) = parse_jobs(_ready([only]), settings)
    assert job.slide_id == slide_id_for("slides", only.key, only.etag)  # type: ignore[union-attr]


def test_series_ready_members_pass_the_allow_list(settings: IngestSettings) -> None:
    with pytest.raises(SourceRejectedError) as info:
        parse_jobs(_ready(_members(), bucket="elsewhere"), settings)
    assert info.value.code == "forbidden_source"


def test_neither_event_nor_series_ready_is_malformed(settings: IngestSettings) -> None:
    with pytest.raises(SourceRejectedError) as info:
        parse_jobs(b'{"kind": "dicom-wsi-series-ready", "bucket": "slides"}', settings)
    assert info.value.code == "malformed_event"


def test_thumbnail_is_read_only_without_a_volume(settings: IngestSettings) -> None:
    thumb = SeriesMember(key="gw/t.dcm", etag="e5", size=70, flavor="THUMBNAIL")
    (job,) = parse_jobs(_ready([*_members(), thumb]), settings)
    assert ("gw/t.dcm", 70) not in job.readable_members()  # type: ignore[union-attr]
    label = _members()[2]
    (job,) = parse_jobs(_ready([thumb, label]), settings)
    assert job.readable_members() == [("gw/t.dcm", 70)]  # type: ignore[union-attr]
    (job,) = parse_jobs(_ready([label]), settings)
    assert job.readable_members() == []  # type: ignore[union-attr]  # opened: not_wsi
