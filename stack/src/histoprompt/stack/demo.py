"""`make demo`: bring the local stack up, show it healthy, run the demo steps, keep it up.

Later parts extend the demo by adding a step to DEMO_STEPS: an import path
"package.module:function" of a callable `(handle: StackHandle, console: Console) -> None`,
run in order once the stack is healthy (for example upload a synthetic slide, wait for
its result, print the pathway scores).

    python -m histoprompt.stack.demo           # until Ctrl-C, with an ingest worker consuming
    python -m histoprompt.stack.demo --once    # run the steps, start and stop the worker,
                                               # then tear down
"""

from __future__ import annotations

import importlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from histoprompt.core import names

if TYPE_CHECKING:
    from rich.console import Console

    from histoprompt.stack.handle import StackHandle
    from histoprompt.stack.supervisor import ProcessRecord

# The demo's steps, in order. Each part appends its own entry when it lands.
DEMO_STEPS: tuple[str, ...] = (
    # train (or reuse) the SYNTHETIC alignment, build the model repository, load it in Triton
    "histoprompt.export.demo_step:serve_models",
    # run the ingest service, upload a SYNTHETIC slide, print its pathway scores
    "histoprompt.stack.ingest_demo:demo_step",
)

DemoStep = Callable[["StackHandle", "Console"], None]


def load_step(path: str) -> DemoStep:
    """Import `package.module:function`."""
    from histoprompt.stack.errors import StackError

    module_name, _, attr = path.partition(":")
    try:
        step = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise StackError(f"demo step {path!r} cannot be imported: {err}") from err
    if not callable(step):
        raise StackError(f"demo step {path!r} is not callable")
    return step  # type: ignore[no-any-return]


def run_demo(
    console: Console,
    *,
    once: bool,
    steps: tuple[str, ...] = DEMO_STEPS,
    state_dir: Path | None = None,
    worker: bool = True,
) -> None:
    """Start the stack, print its health, run `steps`, start an ingest worker (`worker`;
    it needs the model the steps load); stop both on Ctrl-C (or at once with `once`)."""
    from histoprompt.stack.launcher import down, status, up
    from histoprompt.stack.report import status_table
    from histoprompt.stack.settings import StackSettings

    # The services die with the demo even if it is killed outright: a demo leaves nothing.
    overrides: dict[str, object] = {"stack_die_with_parent": True}
    if state_dir is not None:
        overrides["stack_state_dir"] = state_dir
    settings = StackSettings(**overrides)  # type: ignore[arg-type]
    console.print(
        f"starting the local stack (Kafka, {settings.stack_s3_server} S3, Triton, Prometheus) ..."
    )
    handle = up(settings)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    running: ProcessRecord | None = None
    try:
        console.print(status_table(status(handle.state_dir), handle))
        console.print(
            f"stack healthy in {handle.startup_seconds['total']:.1f} s; "
            f"settings in {handle.env_file}"
        )
        for path in steps:
            console.rule(path)
            load_step(path)(handle, console)
        if worker:
            running = _start_worker(handle, console)
        if not once:
            console.print(
                "stack is up; try `histoprompt submit slide.svs --wait` (it reads "
                f"{handle.env_file.name}); press Ctrl-C to stop it"
            )
            _keep_up(running, console)
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if running is not None:
            from histoprompt.stack.demo_worker import stop_worker

            killed = stop_worker(running)
            console.print("ingest worker " + ("killed" if killed else "stopped"))
        down(handle.state_dir)
        console.print("stack stopped")


def _start_worker(handle: StackHandle, console: Console) -> ProcessRecord:
    """The ingest worker consuming for `histoprompt submit --wait` until the demo stops."""
    from histoprompt.stack.demo_worker import start_worker, worker_spec

    log = worker_spec(handle.env_file, handle.state_dir).log_path
    console.print(f"starting an ingest worker (histoprompt-ingest run; log {log}) ...")
    record = start_worker(handle.env_file, handle.state_dir, handle.ingest_metrics_port)
    console.print(
        f"ingest worker ready (pid {record.pid}), consuming {names.TOPIC_INCOMING}; "
        f"metrics on 127.0.0.1:{handle.ingest_metrics_port}"
    )
    return record


def _keep_up(running: ProcessRecord | None, console: Console) -> None:
    """Until Ctrl-C; says once if the worker exits (its log tail with it)."""
    from histoprompt.stack.supervisor import is_running, log_tail

    while True:
        time.sleep(1.0)
        if running is not None and not is_running(running):
            console.print("[red]the ingest worker exited[/]; its log ends with:")
            console.print(log_tail(running.log_path, 10), markup=False, highlight=False)
            running = None


def main(
    once: Annotated[
        bool, typer.Option("--once", help="run the demo steps, then tear down")
    ] = False,
) -> None:
    """Bring the local stack up, show each service healthy, run the demo steps."""
    from rich.console import Console

    from histoprompt.stack.errors import StackError

    console = Console()
    try:
        run_demo(console, once=once)
    except StackError as err:
        console.print("[red]demo failed[/]")
        console.print(str(err), markup=False, highlight=False)
        raise typer.Exit(1) from err


if __name__ == "__main__":
    typer.run(main)
