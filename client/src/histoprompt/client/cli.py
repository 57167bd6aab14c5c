"""`histoprompt`: the root Typer app; each command group lives in its own module.

Only typer and the standard library are imported here and at the top of the command
modules, so `histoprompt --help` and shell completion stay instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from histoprompt.client.commands import (
    JsonFlag,
    dlq,
    gene_sets,
    heatmap,
    predict,
    query,
    results,
    status,
    submit,
    watch,
)
from histoprompt.client.group import RootGroup
from histoprompt.client.state import CliState

__all__ = ["app"]

app = typer.Typer(
    name="histoprompt",
    cls=RootGroup,
    help=(
        "Submit H&E slides, watch them through the stack, and read or query pathway scores.\n\n"
        "Example: histoprompt submit slide.svs --wait"
    ),
    epilog=(
        "Settings: flags > env HISTOPROMPT_* > --config TOML > stack.env > defaults. "
        "Exit codes: 0 ok, 1 usage, 2 not found, 3 service unavailable, 4 invalid input or "
        "refused (credentials, TLS certificate)."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    # Plain click help: rendering it with rich costs ~0.25 s of imports on every --help.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML settings file (env HISTOPROMPT_CONFIG)."),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file", help="stack env file (default $HISTOPROMPT_ENV_FILE or ./stack.env)."
        ),
    ] = None,
    as_json: JsonFlag = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3 host:port.")] = None,
    kafka_bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    triton_url: Annotated[str | None, typer.Option(help="Triton gRPC host:port.")] = None,
    prometheus_url: Annotated[str | None, typer.Option(help="Prometheus base URL.")] = None,
) -> None:
    """Root options shared by every command (settings are read on first use)."""
    ctx.obj = CliState(
        config=config,
        env_file=env_file,
        json=as_json,
        debug=debug,
        flags={
            "s3_endpoint": s3_endpoint,
            "kafka_bootstrap": kafka_bootstrap,
            "triton_url": triton_url,
            "prometheus_url": prometheus_url,
        },
    )


app.command("submit")(submit.submit)
app.command("watch")(watch.watch)
app.command("results")(results.results)
app.command("query")(query.query)
app.command("predict")(predict.predict)
app.command("heatmap")(heatmap.heatmap)
app.command("status")(status.status)
app.add_typer(gene_sets.app, name="gene-sets")
app.add_typer(dlq.app, name="dlq")
