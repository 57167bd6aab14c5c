"""`histoprompt-ingest`: a bad setting is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from histoprompt.ingest.cli import app


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> CliRunner:
    import os

    for name in list(os.environ):
        if name.startswith("HISTOPROMPT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    return CliRunner()


def test_settings_prints_the_effective_settings(runner: CliRunner) -> None:
    res = runner.invoke(app, ["settings"], env={"HISTOPROMPT_INGEST_BATCH_SIZE": "16"})
    assert res.exit_code == 0, res.output
    assert '"ingest_batch_size": 16' in res.output


def test_a_mistyped_variable_is_one_line_naming_the_closest(runner: CliRunner) -> None:
    res = runner.invoke(app, ["settings"], env={"HISTOPROMPT_INGEST_BACH_SIZE": "16"})
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert "HISTOPROMPT_INGEST_BACH_SIZE" in lines[0]
    assert "HISTOPROMPT_INGEST_BATCH_SIZE" in lines[0]
    assert "Traceback" not in res.output


def test_an_out_of_range_value_is_one_line(runner: CliRunner) -> None:
    res = runner.invoke(app, ["settings"], env={"HISTOPROMPT_INGEST_BATCH_SIZE": "100000"})
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert "ingest_batch_size" in res.output


def test_a_gpu_decoder_that_cannot_run_is_one_line_naming_the_extra(runner: CliRunner) -> None:
    from histoprompt.wsi.decoders import gpu_unavailable_reason

    if gpu_unavailable_reason() is None:
        pytest.skip("the gpu extra and a CUDA device are here: the gpu decoder can run")
    res = runner.invoke(app, ["run"], env={"HISTOPROMPT_INGEST_DECODER": "gpu"})
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: HISTOPROMPT_INGEST_DECODER=gpu")
    assert "histoprompt-wsi[gpu]" in lines[0] and "Traceback" not in res.output
