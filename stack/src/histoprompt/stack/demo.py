"""`make demo`: bring the local stack up, show it healthy, run the demo steps, keep it up.

Later parts extend the demo by adding a step to DEMO_STEPS: an import path
"package.module:function" of a callable `(handle: StackHandle, console: Console) -> None`,
run in order once the stack is healthy (for example upload a synthetic slide, wait for
its result, print the pathway scores).

    python -m histoprompt.stack.demo           # until Ctrl-C
    python -m histoprompt.stack.demo --once    # run the steps, then tear down
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

if TYPE_CHECKING:
    from rich.console import Console

    from histoprompt.stack.handle import StackHandle

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
) -> None:
    """Start the stack, print its health, run `steps`; stop it on Ctrl-C (or at once)."""
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
    try:
        console.print(status_table(status(handle.state_dir), handle))
        console.print(
            f"stack healthy in {handle.startup_seconds['total']:.1f} s; "
            f"settings in {handle.env_file}"
        )
        for path in steps:
            console.rule(path)
            load_step(path)(handle, console)
        if not once:
            console.print("stack is up; press Ctrl-C to stop it")
            while True:
                time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        signal.signal(signal.SIGTERM, previous)
        down(handle.state_dir)
        console.print("stack stopped")


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
