"""`histoprompt dlq list|replay`: what the dead-letter topic holds, and sending it back.

Both show slide ids and reasons, never object keys (a scanner's key may name a patient).
"""

from __future__ import annotations

from typing import Annotated

import typer

from histoprompt.client.commands import JsonFlag
from histoprompt.client.state import get_state

app = typer.Typer(
    help=(
        "The dead-letter topic: what it holds and why, and replaying it once fixed.\n\n"
        "Example: histoprompt dlq replay --dry-run"
    ),
    no_args_is_help=True,
)

LIST_COLUMNS = ["record", "reason", "slides", "attempts", "first_seen", "last_seen", "replayed"]
REPLAY_COLUMNS = ["record", "reason", "slide", "sent_as", "outcome"]


@app.command("list")
def list_records(
    ctx: typer.Context,
    reason: Annotated[str | None, typer.Option(help="Only records with this reason code.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the DLQ's records (partition:offset, reason, slides, attempts) and the count per
    reason; `replayed` says whether `dlq replay` has sent a record back already.

    \b
    Example: histoprompt dlq list
    Example: histoprompt dlq list --reason crash_loop --json
    """
    from collections import Counter

    from histoprompt.client import dlq, services

    state = get_state(ctx)
    settings = state.settings()
    records = dlq.select(dlq.read_records(settings), reason=reason)
    done = dlq.replayed_refs(services.minio_client(settings), settings.results_bucket)
    rows = [
        {
            "record": r.ref,
            "reason": r.event.error.code,
            "message": r.event.error.message,
            "slides": ",".join(r.slide_ids) or "-",
            "attempts": r.event.attempts,
            "first_seen": r.event.first_seen,
            "last_seen": r.event.last_seen,
            "replayed": "yes" if r.ref in done else "no",
        }
        for r in records
    ]
    counts = Counter(r.event.error.code for r in records)
    out = state.output(as_json)
    if out.json_mode:
        out.json({"records": rows, "by_reason": dict(sorted(counts.items()))})
        return
    out.table(rows, LIST_COLUMNS, title=f"DLQ records ({len(rows)})")
    by_reason = [{"reason": k, "records": v} for k, v in sorted(counts.items())]
    out.table(by_reason, ["reason", "records"], title="per reason")


@app.command("replay")
def replay(
    ctx: typer.Context,
    reason: Annotated[str | None, typer.Option(help="Only records with this reason code.")] = None,
    slide: Annotated[str | None, typer.Option(help="Only records naming this slide id.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be sent; send nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Send DLQ records back to the incoming topic, each at most once: an event for each
    slide's object as the bucket holds it now (a replaced object is a new slide id).
    Records without slides (malformed, refused) are not replayable.

    \b
    Example: histoprompt dlq replay --reason deadline_exceeded --dry-run
    Example: histoprompt dlq replay --slide 0123456789abcdef
    """
    from histoprompt.client import dlq, services

    state = get_state(ctx)
    settings = state.settings()
    records = dlq.select(dlq.read_records(settings), reason=reason, slide=slide)
    client = services.minio_client(settings)
    done = dlq.replayed_refs(client, settings.results_bucket)
    producer = None if dry_run else services.kafka_producer(settings)
    try:
        outcomes = dlq.replay(settings, client, producer, records, done)
    finally:
        if producer is not None:
            producer.close()
    rows = [o.row() for o in outcomes]
    title = "DLQ replay (dry run)" if dry_run else "DLQ replay"
    state.output(as_json).table(rows, REPLAY_COLUMNS, title=title)
