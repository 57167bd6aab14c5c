"""The `make demo` ingest worker on the real stack: a supervised `histoprompt-ingest run` that
`histoprompt submit --wait` finds in the consumer group and gets its result from, then a clean
SIGTERM stop that leaves the group (no member, no process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from histoprompt.client.cli import app
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack.demo_worker import start_worker, stop_worker
from histoprompt.stack.feed import skip_group_to_end
from histoprompt.stack.ingest_demo import load_demo_model
from histoprompt.stack.supervisor import is_running

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_histoprompt_env")]

runner = CliRunner()


def test_demo_worker_answers_submit_wait_and_stops_cleanly(stack, tmp_path: Path) -> None:  # noqa: ANN001
    import time

    t = time.monotonic()
    load_demo_model(stack.triton_grpc, stack.model_repository, tmp_path / "demo")
    print(f"\nmodel loaded in {time.monotonic() - t:.1f} s")  # noqa: T201
    settings = IngestSettings.load(stack.env_file)
    # The worker consumes in the default group, as the CLI asks it: start it at the end.
    skip_group_to_end(settings, settings.ingest_group_id)
    slide = write_tiff(tmp_path / "slide.svs", 800, 640)
    env_file = str(stack.env_file)
    import time

    t0 = time.monotonic()
    record = start_worker(stack.env_file, tmp_path, stack.ingest_metrics_port)
    print(f"\nworker ready in {time.monotonic() - t0:.1f} s")  # noqa: T201
    try:
        res = runner.invoke(
            app, ["--env-file", env_file, "submit", str(slide), "--wait", "--timeout", "120"]
        )
        assert res.exit_code == 0, res.output
        print(f"submit --wait done at {time.monotonic() - t0:.1f} s")  # noqa: T201
        assert f"{res.stdout.strip()}: done" in res.stderr
        status = json.loads(runner.invoke(app, ["--env-file", env_file, "--json", "status"]).stdout)
        kafka = next(s for s in status["services"] if s["service"] == "kafka")
        [member] = kafka["figures"]["members"]
        assert member["partitions"] == [0, 1, 2, 3]
    finally:
        t1 = time.monotonic()
        killed = stop_worker(record)
        print(f"worker stopped in {time.monotonic() - t1:.1f} s")  # noqa: T201
    assert not killed and not is_running(record)
    log = record.log_path.read_text()
    assert '"stopped"' in log and "Traceback" not in log
    status = json.loads(runner.invoke(app, ["--env-file", env_file, "--json", "status"]).stdout)
    kafka = next(s for s in status["services"] if s["service"] == "kafka")
    assert kafka["figures"]["members"] == []  # left the group on SIGTERM
