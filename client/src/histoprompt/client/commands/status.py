"""`histoprompt status`: the whole stack's health on one screen."""

from __future__ import annotations

from typing import Annotated

import typer

from histoprompt.client.state import get_state


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Triton models, Kafka topics and lag, S3 buckets and Prometheus figures; exit 3 if down.

    \b
    Example: histoprompt status --json
    """
    from dataclasses import asdict

    from histoprompt.client.errors import EXIT_UNAVAILABLE
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
        models: dict[str, str] = next(
            (c.figures.get("models", {}) for c in checks if c.service == "triton"), {}
        )
        if models:
            out.line("models: " + ", ".join(f"{n}@{plain_value(v)}" for n, v in models.items()))
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_UNAVAILABLE)
