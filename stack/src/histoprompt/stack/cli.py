"""`histoprompt stack up|down|status|stop-service|start-service` (a Typer sub-app; also
`python -m histoprompt.stack`).

Examples:
    histoprompt stack up                     # start everything, write ./stack.env
    histoprompt stack status                 # exit code 1 when a service is unhealthy
    histoprompt stack stop-service kafka     # one service down, ports and data kept
    histoprompt stack start-service kafka
    histoprompt stack down
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="stack",
    help="Local service stack: Kafka, MinIO (or SeaweedFS) S3, Triton, Prometheus on 127.0.0.1.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

StateDir = Annotated[
    Path | None,
    typer.Option(help="state dir (logs, data, state.json); env HISTOPROMPT_STACK_STATE_DIR"),
]


def _state_dir(value: Path | None) -> Path:
    from histoprompt.stack.settings import StackSettings

    return value if value is not None else StackSettings().stack_state_dir


@app.command()
def up(
    state_dir: StateDir = None,
    env_file: Annotated[
        Path | None, typer.Option(help="where to write the HISTOPROMPT_* settings")
    ] = None,
    model_repository: Annotated[
        Path | None, typer.Option(help="Triton model repository (explicit model control)")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds to wait for health")] = None,
) -> None:
    """Start the stack on free loopback ports and wait until every service is healthy.

    Example: histoprompt stack up --model-repository model_repository
    """
    from rich.console import Console

    from histoprompt.stack.errors import StackError
    from histoprompt.stack.launcher import status as stack_status
    from histoprompt.stack.launcher import up as stack_up
    from histoprompt.stack.report import status_table
    from histoprompt.stack.settings import StackSettings

    overrides: dict[str, Any] = {
        "stack_state_dir": state_dir,
        "stack_env_file": env_file,
        "stack_model_repository": model_repository,
        "stack_start_timeout": timeout,
    }
    settings = StackSettings(**{k: v for k, v in overrides.items() if v is not None})
    console = Console()
    try:
        handle = stack_up(settings)
    except StackError as err:
        console.print("[red]stack up failed[/]")
        console.print(str(err), markup=False, highlight=False)
        raise typer.Exit(1) from err
    console.print(status_table(stack_status(handle.state_dir), handle))
    console.print(
        f"settings written to {handle.env_file}; started in {handle.startup_seconds['total']:.1f} s"
    )


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop every service (SIGTERM, then SIGKILL after a timeout) and remove stack.env.

    Example: histoprompt stack down
    """
    from histoprompt.stack.launcher import down as stack_down

    killed = stack_down(_state_dir(state_dir))
    typer.echo("stack stopped" + (f" (killed: {', '.join(killed)})" if killed else ""))


@app.command()
def status(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show each service's process and health; exit code 1 unless all are healthy.

    Example: histoprompt stack status --json
    """
    from rich.console import Console

    from histoprompt.stack.launcher import attach
    from histoprompt.stack.launcher import status as stack_status
    from histoprompt.stack.report import status_table

    result = stack_status(_state_dir(state_dir))
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    elif not result.services:
        typer.echo(f"no stack recorded in {result.state_dir}")
    else:
        Console().print(status_table(result, attach(result.state_dir)))
    if not result.healthy:
        raise typer.Exit(1)


ServiceArg = Annotated[
    str, typer.Argument(help="kafka, triton, prometheus, or the S3 server (minio or seaweed)")
]


@app.command("stop-service")
def stop_service(name: ServiceArg, state_dir: StateDir = None) -> None:
    """Stop one service of the running stack; its ports and data are kept for start-service.

    Example: histoprompt stack stop-service kafka
    """
    from histoprompt.stack.errors import StackError
    from histoprompt.stack.services import stop_service as stop_one

    try:
        killed = stop_one(_state_dir(state_dir), name)
    except StackError as err:
        typer.echo(f"error: {str(err).splitlines()[0]}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"{name} stopped" + (" (killed)" if killed else ""))


@app.command("start-service")
def start_service(name: ServiceArg, state_dir: StateDir = None) -> None:
    """Start a stopped service again on its old ports and data; Triton reloads its models.

    Example: histoprompt stack start-service kafka
    """
    from histoprompt.stack.errors import StackError
    from histoprompt.stack.services import start_service as start_one

    try:
        seconds = start_one(_state_dir(state_dir), name, die_with_parent=False)
    except StackError as err:
        typer.echo(f"error: {str(err).splitlines()[0]}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"{name} healthy after {seconds:.1f} s")
