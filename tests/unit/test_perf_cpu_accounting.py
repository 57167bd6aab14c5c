"""tests/perf/cpu_accounting.py: CPU seconds per process group, read with psutil.

Real processes burn known CPU; the accounting must see it in the right group, leave out
children when asked to, and keep what an exited (reaped) child spent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
from perf.cpu_accounting import Group, delta, delta_by_process, measure, sample

BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"
SLEEP_THEN_BURN = "import time, sys\nsys.stdin.readline()\n" + BURN


def _burn_here(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_this_process_without_its_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", SLEEP_THEN_BURN.format(s=0.4)], stdin=subprocess.PIPE
    )
    try:
        groups = {"me": Group(os.getpid(), tree=False), "tree": Group(os.getpid())}
        with measure(groups) as got:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
            _burn_here(0.2)
            child.wait(timeout=30)
        # the child exited and was reaped by us inside the block: counted only with the tree
        assert 0.18 <= got.groups["me"] < 0.35
        assert got.groups["tree"] >= got.groups["me"] + 0.35
    finally:
        child.kill()
        child.wait()


def test_a_live_child_is_split_out_by_name() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", SLEEP_THEN_BURN.format(s=0.3) + "sys.stdin.readline()\n"],
        stdin=subprocess.PIPE,
    )
    try:
        groups = {"tree": Group(os.getpid())}
        before = sample(groups)
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        time.sleep(0.1)
        key = (child.pid, psutil.Process(child.pid).create_time())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the child has burnt its share
            after = sample(groups)
            if after.per_process["tree"][key] - before.per_process["tree"].get(key, 0) >= 0.29:
                break
            time.sleep(0.05)
        assert delta(before, after)["tree"] >= 0.29
        by_name = delta_by_process(before, after, "tree")
        assert after.names[key] in by_name
        assert sum(by_name.values()) == sum(
            max(0.0, v - before.per_process["tree"].get(k, 0.0))
            for k, v in after.per_process["tree"].items()
        )
    finally:
        child.kill()
        child.wait()
