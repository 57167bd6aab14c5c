"""`histoprompt-ingest`: run the ingest service, or check its settings.

histoprompt-ingest run                       # consume until SIGTERM
histoprompt-ingest run --concurrency 2       # two slides in flight
histoprompt-ingest settings                  # print the effective settings (no secrets)

Exit codes: 0 stopped (SIGTERM/SIGINT); 2 a bad setting; 4 refused: a service rejected our
credentials (Kafka SASL, S3 keys) or we rejected its TLS certificate (the CA files), found
before anything is consumed. Each failure is one `error: ...` line on stderr. The same code 4
means the same in the `histoprompt` CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from histoprompt.ingest.settings import IngestSettings

app = typer.Typer(
    name="histoprompt-ingest",
    help="The histoprompt ingest service: Kafka S3 events -> WSI tiles -> Triton -> results.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# A service refused us, or we refused its certificate: the CLI's code for it too.
EXIT_REFUSED = 4

EnvFile = Annotated[
    Path | None,
    typer.Option("--env-file", envvar="HISTOPROMPT_ENV_FILE", help="stack.env to read"),
]


def _load(env_file: Path | None, **overrides: object) -> IngestSettings:
    """Settings, or one line on stderr and exit 2: a bad setting never becomes a traceback."""
    from pydantic import ValidationError

    from histoprompt.core.errors import ConfigError
    from histoprompt.ingest.settings import IngestSettings

    try:
        return IngestSettings.load(env_file, **overrides)
    except ConfigError as err:
        message = str(err)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"invalid setting {where}: {first['msg']}"
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _check_decoder(mode: str) -> None:
    """A gpu decoder that cannot run here is a setting error, found before any connection:
    one line naming what to install, exit 2 (auto falls back to cpu instead)."""
    from histoprompt.wsi.decoders import select_decoder
    from histoprompt.wsi.errors import DecoderUnavailableError

    if mode != "gpu":
        return
    try:
        select_decoder(mode)
    except DecoderUnavailableError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


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

    overrides: dict[str, object] = {}
    if concurrency is not None:
        overrides["ingest_concurrency"] = concurrency
    if metrics_port is not None:
        overrides["ingest_metrics_port"] = metrics_port
    from histoprompt.core.errors import PermissionDeniedError

    configure(log_level.upper())
    settings = _load(env_file, **overrides)
    _check_decoder(settings.ingest_decoder)
    from histoprompt.core.allocator import tune_malloc

    tune_malloc()  # this process streams decoded frames: see histoprompt.core.allocator
    try:
        code = IngestService(settings).run()
    except PermissionDeniedError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    raise typer.Exit(code)


@app.command("settings")
def show_settings(env_file: EnvFile = None) -> None:
    """Print the effective settings as JSON, secrets masked.

    Example: `histoprompt-ingest settings`.
    """
    typer.echo(_load(env_file).model_dump_json(indent=1))
