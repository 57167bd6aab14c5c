"""Property tests of the S3-event parser (hypothesis): variants of MinIO's and AWS's real
notification shapes (tests/unit/assets/s3_events) with generated keys, sizes, etags and event
names, fields dropped or given the wrong type, and arbitrary bytes. The parser returns slide
jobs or skips, or raises the project's SourceRejectedError: never KeyError, TypeError, ..."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.object_keys import key_problem
from histoprompt.core.schemas import S3Event
from histoprompt.ingest.errors import SourceRejectedError
from histoprompt.ingest.events import Skip, SlideJob, parse_jobs
from histoprompt.ingest.settings import IngestSettings

ASSETS = Path(__file__).parent / "assets" / "s3_events"
SHAPES = {
    name: json.loads((ASSETS / f"{name}.json").read_text(encoding="utf-8"))
    for name in ("minio_put", "minio_multipart", "aws_multipart")
}
BUCKET = "histoprompt-slides"
SETTINGS = IngestSettings(_env_file=None, slides_bucket=BUCKET)  # type: ignore[call-arg]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EVENT_NAMES = st.sampled_from(
    [
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:CompleteMultipartUpload",
        "ObjectCreated:Copy",
        "ObjectCreated:Post",
        "s3:ObjectRemoved:Delete",
        "ObjectRemoved:DeleteMarkerCreated",
        "s3:ObjectAccessed:Get",
    ]
)
KEY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60
).map(lambda s: "up/" + s)
WRONG_TYPES = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.lists(st.none())
)
WRONG_TYPES |= st.dictionaries(st.text(max_size=3), st.none(), max_size=2)


def _record(shape: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = shape["Records"][0]
    return rec


def _encode(key: str, minio: bool) -> str:
    # MinIO encodes `/` as %2F, AWS leaves it: both are form-encoding (space as +).
    return quote_plus(key, safe="" if minio else "/")


def _parse(raw: bytes) -> list[SlideJob | Skip] | SourceRejectedError:
    try:
        return parse_jobs(raw, SETTINGS)
    except SourceRejectedError as err:
        return err


@FAST
@given(
    shape=st.sampled_from(sorted(SHAPES)),
    key=KEY_TEXT,
    size=st.integers(min_value=0, max_value=2**63 - 1),
    etag=st.text(alphabet='0123456789abcdef-"', max_size=40),
    event_name=EVENT_NAMES,
)
def test_real_shapes_with_any_key_parse_to_a_job_or_a_project_error(
    shape: str, key: str, size: int, etag: str, event_name: str
) -> None:
    event = copy.deepcopy(SHAPES[shape])
    rec = _record(event)
    rec["eventName"] = event_name
    rec["s3"]["bucket"]["name"] = BUCKET
    rec["s3"]["object"].update(key=_encode(key, shape.startswith("minio")), size=size, eTag=etag)
    got = _parse(json.dumps(event).encode())
    if not event_name.removeprefix("s3:").startswith("ObjectCreated:"):
        assert got == [Skip("not_create")]
    elif key_problem(key) is not None:
        assert isinstance(got, SourceRejectedError) and got.code == "unsafe_key"
    else:
        assert isinstance(got, list) and len(got) == 1
        job = got[0]
        if isinstance(job, SlideJob):  # a series member is a Skip
            assert (job.bucket, job.key, job.size, job.etag) == (BUCKET, key, size, etag.strip('"'))


@FAST
@given(key=KEY_TEXT)
def test_keys_decode_exactly_once_in_either_encoding(key: str) -> None:
    for minio in (True, False):
        event = copy.deepcopy(SHAPES["minio_put"])
        _record(event)["s3"]["object"]["key"] = _encode(key, minio)
        assert S3Event.parse(json.dumps(event)).records[0].key == key
    # %20 for a space (quote, not quote_plus) decodes to the same key
    event = copy.deepcopy(SHAPES["aws_multipart"])
    _record(event)["s3"]["object"]["key"] = quote(key, safe="/")
    assert S3Event.parse(json.dumps(event)).records[0].key == key


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _set(node: Any, path: tuple[Any, ...], value: Any, drop: bool) -> None:
    for step in path[:-1]:
        node = node[step]
    if drop:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@FAST
@given(data=st.data(), shape=st.sampled_from(sorted(SHAPES)), drop=st.booleans())
def test_missing_fields_and_wrong_types_are_project_errors(
    data: st.DataObject, shape: str, drop: bool
) -> None:
    event = copy.deepcopy(SHAPES[shape])
    _record(event)["s3"]["bucket"]["name"] = BUCKET
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(event)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        _set(event, path, data.draw(WRONG_TYPES), drop)
    got = _parse(json.dumps(event).encode())
    assert isinstance(got, list | SourceRejectedError)
    if isinstance(got, SourceRejectedError):
        assert got.code in {"malformed_event", "unsafe_key", "forbidden_source"}


@FAST
@given(raw=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_are_rejected_as_malformed(raw: bytes) -> None:
    got = _parse(raw)
    assert isinstance(got, list | SourceRejectedError)
    try:
        S3Event.parse(raw)
    except InvalidInputError as err:
        assert err.code == "malformed_event"


@FAST
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["Records", "s3", "eventName", "x"]), inner, max_size=3
            )
        ),
        max_leaves=20,
    )
)
def test_any_json_value_is_a_job_list_or_a_project_error(value: Any) -> None:
    assert isinstance(_parse(json.dumps(value).encode()), list | SourceRejectedError)
