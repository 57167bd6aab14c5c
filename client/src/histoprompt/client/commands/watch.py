"""`histoprompt watch`: result events as they arrive."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from histoprompt.client.state import get_state

if TYPE_CHECKING:
    from histoprompt.client.events import ResultFollower

COLUMNS = ["slide", "status", "tiles", "seconds", "model", "error"]


def watch(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Print the events already there, then exit.")
    ] = False,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Live mode: start with the backlog.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="Rows kept in the live table.")] = 30,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON (one object per line live).")
    ] = False,
) -> None:
    """A live table of result events (slide, status, tiles, seconds) until Ctrl-C.

    \b
    Example: histoprompt watch --once
    """
    from histoprompt.client.events import ResultFollower, event_row

    state = get_state(ctx)
    out = state.output(as_json)
    with ResultFollower(state.settings(), from_beginning=once or from_beginning) as follower:
        if once:
            rows = [event_row(ev) for ev in follower.backlog()]
            out.table(rows, COLUMNS, title="result events")
            return
        if not out.rich:
            import json

            if not out.json_mode:
                out.line("\t".join(COLUMNS))
            for ev in follower.stream():
                row = event_row(ev)
                if out.json_mode:
                    out.line(json.dumps(row))
                else:
                    out.line("\t".join(str(row[c]) for c in COLUMNS))
        _live(follower, limit)


def _live(follower: ResultFollower, limit: int) -> None:
    from rich.live import Live
    from rich.table import Table

    from histoprompt.client.events import event_row
    from histoprompt.client.output import plain_value

    rows: list[dict[str, object]] = []

    def render() -> Table:
        table = Table(title="result events (Ctrl-C to stop)")
        for col in COLUMNS:
            table.add_column(col)
        for row in rows[-limit:]:
            style = "red" if row["status"] == "failed" else None
            table.add_row(*(plain_value(row[c]) for c in COLUMNS), style=style)
        return table

    with Live(render(), refresh_per_second=4) as live:
        for ev in follower.stream():
            rows.append(event_row(ev))
            live.update(render())
