"""`histoprompt status`: the whole stack's health on one screen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from histoprompt.client.state import get_state

if TYPE_CHECKING:
    from histoprompt.client.output import Output


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Triton models, Kafka topics, lag and the ingest workers (consumer-group members, their
    hosts and partitions), S3 buckets and Prometheus figures; exit 3 if a service is down, 4 if
    one refused our credentials or we its TLS certificate.

    \b
    Example: histoprompt status --json
    """
    from dataclasses import asdict

    from histoprompt.client.errors import EXIT_INVALID, EXIT_UNAVAILABLE
    from histoprompt.client.health import run_checks
    from histoprompt.client.output import plain_value

    state = get_state(ctx)
    checks = run_checks(state.settings())
    out = state.output(as_json)
    rows = [
        {"service": c.service, "state": "up" if c.ok else "DOWN", "detail": c.detail}
        for c in checks
    ]
    if out.json_mode:
        out.json({"ok": all(c.ok for c in checks), "services": [asdict(c) for c in checks]})
    else:
        out.table(rows, ["service", "state", "detail"], title="histoprompt status")
        figures = next((c.figures for c in checks if c.service == "prometheus" and c.ok), {})
        if figures:
            out.table(
                [{"figure": k, "value": v} for k, v in figures.items()],
                ["figure", "value"],
                title="ingest (Prometheus)",
            )
        kafka = next((c for c in checks if c.service == "kafka" and c.ok), None)
        if kafka is not None and kafka.figures.get("members"):
            _workers(out, kafka.figures["members"], state.settings().ingest_group_id)
        models: dict[str, str] = next(
            (c.figures.get("models", {}) for c in checks if c.service == "triton"), {}
        )
        if models:
            out.line("models: " + ", ".join(f"{n}@{plain_value(v)}" for n, v in models.items()))
    if any(c.refused for c in checks):
        raise typer.Exit(EXIT_INVALID)
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_UNAVAILABLE)


def _workers(out: Output, members: list[dict[str, Any]], group: str) -> None:
    """The ingest consumer group's members: client id, host, assigned partitions."""
    rows = [
        {
            "client id": m["client_id"],
            "host": m["host"],
            "partitions": ",".join(str(p) for p in m["partitions"]) or "-",
        }
        for m in members
    ]
    title = f"ingest workers: {len(rows)} in consumer group {group}"
    out.table(rows, ["client id", "host", "partitions"], title=title)
