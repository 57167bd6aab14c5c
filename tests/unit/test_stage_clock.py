"""The CPU clock per data-path stage: nested stages pause the outer one, threads add up."""

from __future__ import annotations

import threading
import time

from histoprompt.wsi.stage_clock import STAGES, StageClock


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_nested_stage_is_charged_to_itself_only() -> None:
    clock = StageClock()
    with clock.stage("tiles"):
        _spin(0.05)
        with clock.stage("decode"):
            _spin(0.1)
        _spin(0.05)
    got = clock.totals()
    assert 0.095 <= got["decode"] < 0.15
    assert 0.095 <= got["tiles"] < 0.15
    assert got["read"] == 0.0 and got["mask"] == 0.0
    assert set(STAGES) <= set(got)


def test_threads_add_up_and_sleep_costs_nothing() -> None:
    clock = StageClock()

    def work() -> None:
        with clock.stage("read"):
            _spin(0.05)
            time.sleep(0.1)  # waiting on S3 is no CPU

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0.14 <= clock.totals()["read"] < 0.25


def test_a_failing_stage_still_charges_and_unwinds() -> None:
    clock = StageClock()
    try:
        with clock.stage("mask"):
            _spin(0.03)
            raise ValueError("boom")
    except ValueError:
        pass
    with clock.stage("decode"):
        _spin(0.03)
    got = clock.totals()
    assert got["mask"] >= 0.029 and 0.029 <= got["decode"] < 0.06
