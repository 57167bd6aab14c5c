"""The `make demo` step of the ingest part prints Hallmark scores for a SYNTHETIC slide."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from histoprompt.ingest.demo import demo_step

pytestmark = pytest.mark.integration


def test_demo_step_prints_pathway_scores(stack) -> None:  # noqa: ANN001
    out = io.StringIO()
    demo_step(stack, Console(file=out, width=120))
    text = out.getvalue()
    assert "SYNTHETIC" in text and "UNTRAINED" in text
    assert text.count("HALLMARK_") >= 10
    assert "result in" in text
