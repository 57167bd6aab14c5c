"""`histoprompt-ingest`: run the ingest service, or check its settings.

histoprompt-ingest run                       # consume until SIGTERM
histoprompt-ingest run --concurrency 2       # two slides in flight
histoprompt-ingest settings                  # print the effective settings (no secrets)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="histoprompt-ingest",
    help="The histoprompt ingest service: Kafka S3 events -> WSI tiles -> Triton -> results.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

EnvFile = Annotated[
    Path | None,
    typer.Option("--env-file", envvar="HISTOPROMPT_ENV_FILE", help="stack.env to read"),
]


@app.command()
def run(
    env_file: EnvFile = None,
    concurrency: Annotated[
        int | None, typer.Option(help="slides in flight (HISTOPROMPT_INGEST_CONCURRENCY)")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="/metrics port (HISTOPROMPT_INGEST_METRICS_PORT)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Consume histoprompt.slides.incoming until SIGTERM. Example: `histoprompt-ingest run`."""
    from histoprompt.ingest.logs import configure
    from histoprompt.ingest.service import IngestService
    from histoprompt.ingest.settings import IngestSettings

    overrides: dict[str, object] = {}
    if concurrency is not None:
        overrides["ingest_concurrency"] = concurrency
    if metrics_port is not None:
        overrides["ingest_metrics_port"] = metrics_port
    configure(log_level.upper())
    settings = IngestSettings.load(env_file, **overrides)
    raise typer.Exit(IngestService(settings).run())


@app.command("settings")
def show_settings(env_file: EnvFile = None) -> None:
    """Print the effective settings as JSON, secrets masked.

    Example: `histoprompt-ingest settings`.
    """
    from histoprompt.ingest.settings import IngestSettings

    typer.echo(IngestSettings.load(env_file).model_dump_json(indent=1))
