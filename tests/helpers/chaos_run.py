"""One chaos run on the real local stack: ingest workers as real processes, a mixed submission,
a fault, a bounded wait, and the figures counted from the stores (helpers.chaos_audit).

Workers use static group membership (`HISTOPROMPT_INGEST_GROUP_INSTANCE_ID`, one id per
worker slot) and a 10 s session: a worker restarted after `kill -9` takes its partitions
back at once, so the killed slide is delivered again within seconds (docs/architecture.md,
"Delivery after a worker dies"). Their retry budget (6 tries, 1 s doubling: about 31 s)
outlasts the 15 s outages the faults inject.

Each run writes its figures as JSON to `$CHAOS_RESULTS_DIR` (`make chaos`: `.cache/chaos`;
default `.cache/chaos-test`, so a `make test` run never feeds the table);
`python -m tests.perf.reliability_report` renders RELIABILITY.md from them.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from helpers.chaos_audit import Audit, count
from helpers.chaos_feed import Feeder, Item, Sources
from helpers.ingest_worker import Worker
from histoprompt.core import names
from histoprompt.core.s3 import make_minio
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack.feed import TopicWatcher, make_producer, skip_group_to_end

REPO_ROOT = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT_S = 10.0
WORKER_ENV = {
    "HISTOPROMPT_INGEST_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
    # Longer than a killed worker's redelivery (restart + the slide ahead): an instance held
    # up behind it past the settle window would be ignored as late (docs/architecture.md).
    "HISTOPROMPT_INGEST_SERIES_SETTLE_S": "15",
    "HISTOPROMPT_INGEST_MAX_DELIVERIES": "2",
    "HISTOPROMPT_INGEST_MAX_ATTEMPTS": "6",
    "HISTOPROMPT_INGEST_RETRY_BASE_S": "1.0",
    "HISTOPROMPT_INGEST_SHUTDOWN_DEADLINE_S": "10",
    "HISTOPROMPT_INGEST_BATCH_SIZE": "16",
}


def results_dir() -> Path:
    return Path(os.environ.get("CHAOS_RESULTS_DIR", REPO_ROOT / ".cache" / "chaos-test"))


class ChaosRun:
    """Workers, feeder and auditor of one fault test; `close()` stops every worker."""

    def __init__(self, stack: Any, tmp_path: Path, fault: str) -> None:
        self.stack = stack
        self.fault = fault
        self.settings = IngestSettings.load(stack.env_file)
        self.group = f"chaos-{fault}-{uuid.uuid4().hex[:8]}"
        skip_group_to_end(self.settings, self.group)
        self.minio = make_minio(self.settings)
        self.producer = make_producer(self.settings)
        self.items: list[Item] = []
        self.audit = Audit(
            self.minio,
            self.settings,
            self.items,
            self.group,
            TopicWatcher(self.settings, names.TOPIC_DLQ),
            TopicWatcher(self.settings, names.TOPIC_RESULTS),
        )
        self.feeder = Feeder(
            self.minio, self.producer, self.settings.slides_bucket, Sources(tmp_path), self.group
        )
        self.feeder.arm = self._arm
        self.workers: dict[int, Worker] = {}
        self.retired: list[Worker] = []
        self.kill_on_start: set[str] = set()
        # kill_next_start(): the next slide any worker starts kills it (slot, slide_id, time)
        self._kill_next = threading.Event()
        self.next_killed: tuple[int, str, float] | None = None
        self.kills: list[tuple[float, str]] = []
        self.violations: list[str] = []
        self.samples = 0
        self._lock = threading.Lock()

    # workers
    def start_worker(self, slot: int) -> Worker:
        env = {**WORKER_ENV, "HISTOPROMPT_INGEST_GROUP_INSTANCE_ID": f"{self.group}-w{slot}"}
        worker = Worker(self.stack, self.group, **env)
        worker.on_line.append(self._crash_hook)
        self.workers[slot] = worker
        return worker

    def stop_worker(self, slot: int) -> int:
        worker = self.workers.pop(slot)
        self.retired.append(worker)
        return worker.stop()

    def _arm(self, item: Item) -> None:
        if item.kind == "crash":
            self.kill_on_start.add(item.slide_id)

    def kill_next_start(self, timeout: float = 120.0) -> tuple[int, str, float]:
        """Kill -9 the worker that starts the next slide, the moment its start is logged
        (read on the worker's stderr thread): mid-slide. Returns (slot, slide_id, time)."""
        self._kill_next.set()
        deadline = time.monotonic() + timeout
        while self.next_killed is None:
            assert time.monotonic() < deadline, "no slide started"
            time.sleep(0.05)
        return self.next_killed

    def _crash_hook(self, worker: Worker, line: str) -> None:
        """Kill -9 the worker that starts a crash item, then start its slot again."""
        if "slide started" not in line:
            return
        if self._kill_next.is_set():
            with self._lock:
                slot = next((k for k, w in self.workers.items() if w is worker), None)
                if slot is None or not self._kill_next.is_set():
                    return
                os.kill(worker.proc.pid, signal.SIGKILL)
                self._kill_next.clear()
                self.retired.append(self.workers.pop(slot))
                sid = json.loads(line).get("slide_id", "")
                self.next_killed = (slot, sid, time.time())
            return
        if not any(s in line for s in self.kill_on_start):
            return
        with self._lock:
            slot = next((k for k, w in self.workers.items() if w is worker), None)
            if slot is None:
                return
            os.kill(worker.proc.pid, signal.SIGKILL)
            self.kills.append((time.monotonic(), line))
            self.retired.append(self.workers.pop(slot))
        threading.Timer(1.0, self.start_worker, args=(slot,)).start()

    def wait_joined(self, timeout: float = 60.0) -> None:
        """Until every worker has its partitions (a rebalance log with an assignment)."""
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            left = max(0.1, deadline - time.monotonic())
            assert worker.wait_for("partitions assigned", timeout=left), worker.lines[-20:]

    def all_workers(self) -> list[Worker]:
        return [*self.retired, *self.workers.values()]

    def logged(self, status: str, after: float, slide_id: str = "") -> list[float]:
        """Wall-clock times (the workers' own log stamps) of `status` records after `after`
        (time.time()), for `slide_id` when given: timing only, counts come from the stores."""
        out = []
        for worker in self.all_workers():
            for record in worker.records():
                if record.get("status") != status or slide_id not in record.get("slide_id", ""):
                    continue
                when = datetime.fromisoformat(record["ts"]).timestamp()
                if when > after:
                    out.append(when)
        return sorted(out)

    def first_result_after(self, t: float) -> float | None:
        """Seconds from `t` (time.time()) to the first slide a worker logged done after it."""
        done = self.logged("done", t)
        return done[0] - t if done else None

    # feeding and waiting
    def submit(self, kinds: list[str], interval_s: float = 0.0) -> None:
        for kind in kinds:
            item = self.feeder.submit(len(self.items), kind)
            item.submitted_at = time.monotonic()
            item.submitted_wall = time.time()
            self.items.append(item)
            if interval_s:
                time.sleep(interval_s)

    def sample_offsets(self) -> None:
        """Compare the group's committed offsets with the stores now."""
        committed = self.audit.committed()
        self.violations += self.audit.offset_violations(committed)
        self.samples += 1

    def wait_settled(self, timeout_s: float, sample_every_s: float = 3.0) -> dict[str, Any]:
        """Until no item is lost (or `timeout_s`), sampling committed offsets on the way."""
        deadline = time.monotonic() + timeout_s
        figures = self.figures()
        next_sample = 0.0
        while figures["lost"] and time.monotonic() < deadline:
            if time.monotonic() >= next_sample:
                self.sample_offsets()
                next_sample = time.monotonic() + sample_every_s
            time.sleep(0.5)
            figures = self.figures()
        time.sleep(3.0)  # late duplicates: a second result would show up now
        self.sample_offsets()
        return self.figures()

    def figures(self) -> dict[str, Any]:
        return count(self.items, self.audit.look(), self.audit)

    def report(self, figures: dict[str, Any], recover_s: float | None, **extra: Any) -> Path:
        out = {
            "fault": self.fault,
            **figures,
            "recover_s": None if recover_s is None else round(recover_s, 2),
            "offset_samples": self.samples,
            "offset_violations": self.violations,
            "workers": len(self.workers),
            "kills": len(self.kills),
            "series_settle_s": float(WORKER_ENV["HISTOPROMPT_INGEST_SERIES_SETTLE_S"]),
            "load_avg": os.getloadavg(),
            "cpus": os.cpu_count(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": _commit(),
            **extra,
        }
        target = results_dir()
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{self.fault}.json"
        path.write_text(json.dumps(out, indent=2))
        # The workers' logs beside the figures, for a failed run's post-mortem.
        with (target / f"{self.fault}.workers.log").open("w") as fh:
            for i, worker in enumerate(self.all_workers()):
                fh.writelines(f"w{i} pid {worker.proc.pid} {ln}" for ln in worker.lines)
        (target / f"{self.fault}.items.json").write_text(
            json.dumps([vars(i) for i in self.items], indent=1, default=str)
        )
        print(f"\nchaos {self.fault}: {json.dumps(out)}")  # noqa: T201
        return path

    def close(self) -> None:
        for worker in self.all_workers():
            worker.stop()
        self.producer.close()
        self.audit.dlq.close()
        self.audit.results.close()


def _commit() -> str:
    """HEAD's short hash, `+` when the working tree differs from it (the code that ran)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - fixed argv
            ["git", *args],  # noqa: S607
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+" if dirty else "")
