"""Chaos on the real local stack: one fault per test, counted from the stores.

Each test starts ingest workers as real processes (static membership, see helpers.chaos_run),
submits SYNTHETIC slides (pyramidal TIFF/SVS, DICOM-WSI series with and without a
manifest), injects its fault, waits (bounded) and asserts, from the results bucket, the
topics and the group's committed offsets: completed = submitted - bad, lost = 0,
duplicated = 0, no offset committed before its slide was durable.

`make test` runs the `chaos` tests without `chaos_full` (the kill and the bad-input run, on
fewer slides); `make chaos` runs all six on 20 slides and renders RELIABILITY.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.chaos_feed import plan
from helpers.chaos_run import ChaosRun

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

# `make chaos` sets CHAOS_SLIDES=20; `make test` runs its subset on fewer.
SLIDES = int(os.environ.get("CHAOS_SLIDES", "6"))
SETTLE_TIMEOUT_S = 240.0
OUTAGE_S = 15.0


@pytest.fixture
def chaos(
    request: pytest.FixtureRequest, stack, served_model, tmp_path: Path
) -> Iterator[ChaosRun]:  # noqa: ANN001
    name = request.node.name.removeprefix("test_").split("[")[0]
    run = ChaosRun(stack, tmp_path, name)
    try:
        yield run
    finally:
        run.close()


def _assert_clean(run: ChaosRun, figures: dict, *, bad: int = 0) -> None:
    assert figures["lost"] == 0, figures
    assert figures["duplicated"] == 0, figures
    assert figures["completed"] == figures["submitted"] - bad, figures
    assert not run.violations, run.violations
    assert run.samples >= 1


def _start(run: ChaosRun, workers: int = 2) -> None:
    for slot in range(workers):
        run.start_worker(slot)
    run.wait_joined()


def _wait_any_start(run: ChaosRun, timeout: float = 90.0) -> tuple[int, str]:
    """The slot and slide id of the first slide a live worker starts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for slot, worker in list(run.workers.items()):
            for record in worker.records():
                if record.get("status") == "started" and record.get("slide_id"):
                    return slot, record["slide_id"]
        time.sleep(0.05)
    raise AssertionError("no slide started")


def _outage(run: ChaosRun, service: str, n_slides: int) -> None:
    _start(run)
    run.submit(plan(n_slides))
    _wait_any_start(run)
    run.stack.stop_service(service)
    down_at = time.time()
    time.sleep(OUTAGE_S)
    run.stack.start_service(service)
    back = time.time()
    figures = run.wait_settled(SETTLE_TIMEOUT_S)
    recover = run.first_result_after(back)
    run.report(
        figures,
        recover,
        recover_means="service back to the next result",
        outage_s=round(back - down_at, 1),
        service=service,
    )
    _assert_clean(run, figures)


def test_kill_worker_mid_slide(chaos: ChaosRun) -> None:
    _start(chaos)
    chaos.submit(plan(SLIDES))
    slot, slide_id, killed_at = chaos.kill_next_start()
    time.sleep(1.0)
    chaos.start_worker(slot)  # as a restart policy would, under the same instance id
    chaos.sample_offsets()  # soon after the kill: nothing of the dead slide committed
    figures = chaos.wait_settled(SETTLE_TIMEOUT_S)
    again = chaos.logged("started", killed_at, slide_id)
    redelivery = again[0] - killed_at if again else None
    # killed mid-slide: no worker had finished it before the kill
    assert not [t for t in chaos.logged("done", 0.0, slide_id) if t <= killed_at]
    chaos.report(figures, redelivery, recover_means="kill -9 to the killed slide's redelivery")
    _assert_clean(chaos, figures)
    assert redelivery is not None, f"killed slide {slide_id} never started again"
    assert redelivery <= 15.0, redelivery


@pytest.mark.chaos_full
def test_kafka_broker_down_15_s(chaos: ChaosRun) -> None:
    _outage(chaos, "kafka", SLIDES)


@pytest.mark.chaos_full
def test_triton_down_15_s(chaos: ChaosRun) -> None:
    _outage(chaos, "triton", SLIDES)


@pytest.mark.chaos_full
def test_s3_down_15_s(chaos: ChaosRun) -> None:
    server = next(n for n in chaos.stack.state.processes if n in ("seaweed", "minio"))
    _outage(chaos, server, SLIDES)


def test_poison_corrupt_and_crash_looping_input(chaos: ChaosRun) -> None:
    kinds = plan(max(SLIDES - 5, 3), poison=3, truncated=1, crash=1)
    _start(chaos)
    t0 = time.monotonic()
    chaos.submit(kinds)
    figures = chaos.wait_settled(SETTLE_TIMEOUT_S)
    states = chaos.audit.look()
    chaos.report(figures, None, settled_s=round(time.monotonic() - t0, 1))
    _assert_clean(chaos, figures, bad=5)
    by_kind = {i.kind: states[i.n] for i in chaos.items if i.bad}
    # the crash-looping slide: killed on each delivery, then dead-lettered, never processed
    assert len(chaos.kills) == 2, chaos.kills
    assert by_kind["crash"].dlq == ["crash_loop"] and not by_kind["crash"].done
    # the truncated DICOM: a permanent slide error, recorded with its reason (a failed
    # result, or a DLQ record when the DLQ takes corrupt slides)
    cut = by_kind["truncated"]
    assert (cut.failed or cut.dlq) and not cut.done, cut
    reasons = cut.failed + cut.dlq
    assert reasons and all(r in ("truncated", "bad_slide") for r in reasons), reasons
    # the DLQ holds exactly the bad ones: 3 poison, the crash loop (and the cut one if there)
    expected = {"malformed_event": 3, "crash_loop": 1} | ({cut.dlq[0]: 1} if cut.dlq else {})
    assert figures["dlq_codes"] == expected, figures["dlq_codes"]
    assert not any(states[i.n].dlq for i in chaos.items if not i.bad)


@pytest.mark.chaos_full
def test_rebalance_add_a_worker_then_remove_one(chaos: ChaosRun) -> None:
    _start(chaos)
    chaos.submit(plan(SLIDES))
    _wait_any_start(chaos)
    chaos.start_worker(2)
    assert chaos.workers[2].wait_for("partitions assigned", timeout=60)
    time.sleep(5.0)
    code = chaos.stop_worker(0)
    removed = time.time()
    figures = chaos.wait_settled(SETTLE_TIMEOUT_S)
    recover = chaos.first_result_after(removed)
    chaos.report(figures, recover, recover_means="worker removed to the next result", exit=code)
    _assert_clean(chaos, figures)
    assert code == 0
