"""The results store's own S3 failures carry `s3_error` (retried, and reported as the
store's trouble), not a generic error that the ingest handler would call `internal`."""

from __future__ import annotations

import pytest
from minio.error import S3Error
from urllib3.exceptions import NewConnectionError, ProtocolError

from histoprompt.core.errors import NotFoundError, TransientError
from histoprompt.core.results import s3_errors
from histoprompt.ingest.handler import _code


def _s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message", "/bucket/key", "req", "host")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "failure",
    [
        _s3_error("SlowDown"),
        _s3_error("InternalError"),
        ProtocolError("connection aborted"),
        NewConnectionError(None, "refused"),  # type: ignore[arg-type]
    ],
)
def test_store_trouble_is_transient_s3_error(failure: Exception) -> None:
    with pytest.raises(TransientError) as caught, s3_errors("results/slide/manifest.json"):
        raise failure
    assert caught.value.code == "s3_error"
    assert _code(caught.value)[0] == "s3_error"


def test_a_missing_object_is_not_transient() -> None:
    with pytest.raises(NotFoundError) as caught, s3_errors("results/slide/manifest.json"):
        raise _s3_error("NoSuchKey")
    assert not isinstance(caught.value, TransientError)
    assert _code(caught.value)[0] == "not_found"


def test_a_bug_is_still_internal() -> None:
    assert _code(KeyError("x"))[0] == "internal"
