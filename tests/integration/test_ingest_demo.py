"""The `make demo` step of the ingest part: a SYNTHETIC slide in, Hallmark scores out."""

from __future__ import annotations

import io
import math
import socket
import threading
from pathlib import Path

import pytest
from rich.console import Console

from histoprompt.core.genesets import load_hallmark
from histoprompt.core.results import ResultStore
from histoprompt.core.s3 import make_minio
from histoprompt.stack.ingest_demo import SERVICE_THREAD_NAME, demo_step

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_step_returns_and_prints_the_slides_pathway_scores(stack, tmp_path: Path) -> None:  # noqa: ANN001
    out = io.StringIO()
    result = demo_step(stack, Console(file=out, width=120), work_dir=tmp_path)
    text = out.getvalue()

    assert set(result.scores) == set(load_hallmark())
    assert all(math.isfinite(v) for v in result.scores.values()), result.scores
    manifest = ResultStore(make_minio(stack.settings), stack.settings.results_bucket).read_manifest(
        result.slide_id, result.model_version
    )
    assert manifest.status == "done"
    assert manifest.slide_id == result.slide_id
    assert result.slide_id in text
    assert result.result_uri in text
    assert "SYNTHETIC" in text and "UNTRAINED" in text
    # The service thread has stopped and released the metrics port (the next module binds it).
    alive = [t for t in threading.enumerate() if t.name == SERVICE_THREAD_NAME and t.is_alive()]
    assert not alive
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", stack.ingest_metrics_port))
