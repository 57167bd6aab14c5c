"""`histoprompt submit PATH...`: upload slides and start their processing."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from histoprompt.client.state import get_state

MEMBERS_TIMEOUT_S = 5.0

if TYPE_CHECKING:
    from histoprompt.client.events import ResultFollower
    from histoprompt.client.settings import ClientSettings
    from histoprompt.client.slides import SlideFiles
    from histoprompt.client.upload import Uploaded


def submit(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(help="DICOM-WSI series folders, .dcm, .svs or .tiff files."),
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow each slide until its result event.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds --wait waits for results (HISTOPROMPT_WAIT_TIMEOUT)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Upload slides (multipart, manifest last) and print each slide_id.

    Every path is checked to be a slide before anything is uploaded. When bucket
    notifications are off (HISTOPROMPT_PUBLISH_EVENTS=true, the default) the S3 event is
    published to Kafka by this command. With --wait, an ingest worker must be in the
    consumer group within 5 s, before anything is uploaded (else exit 3, naming the
    command that starts one).

    \b
    Example: histoprompt submit slide.svs series_dir/ --wait
    """
    from histoprompt.client.slides import inspect_slide

    state = get_state(ctx)
    slides = [inspect_slide(p) for p in paths]  # all validated before any upload
    settings = state.settings()
    follower = _prepare(settings, wait)
    try:
        uploaded = _upload_all(settings, slides)
        out = state.output(as_json)
        if out.json_mode:
            out.json([asdict(u) for u in uploaded])
        else:
            for u in uploaded:
                out.line(u.slide_id)
        if follower is not None:
            _wait(follower, uploaded, timeout or settings.wait_timeout, out.json_mode)
    finally:
        if follower is not None:
            follower.close()


def _prepare(settings: ClientSettings, wait: bool) -> ResultFollower | None:
    """Reach every service needed before the first byte goes up."""
    from histoprompt.client.services import kafka_producer, minio_client
    from histoprompt.client.upload import check_bucket

    check_bucket(minio_client(settings), settings.slides_bucket)
    if settings.publish_events:
        kafka_producer(settings).close()
    if not wait:
        return None
    from histoprompt.client.consumers import require_members
    from histoprompt.client.events import ResultFollower

    # Waiting on a group with no worker would wait forever: say so now (exit 3).
    require_members(settings, timeout_s=MEMBERS_TIMEOUT_S)

    # Positioned before publishing, so a fast result is not missed.
    return ResultFollower(settings, from_beginning=False)


def _upload_all(settings: ClientSettings, slides: list[SlideFiles]) -> list[Uploaded]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from histoprompt.client.events import publish_s3_event
    from histoprompt.client.output import note
    from histoprompt.client.services import minio_client
    from histoprompt.client.upload import upload_slide

    client = minio_client(settings)
    done: list[Uploaded] = []
    total = sum(s.total_bytes for s in slides)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=(err := Console(stderr=True)),
        transient=True,
        # Piped or in CI the bar would only leave blank lines behind.
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("uploading", total=total)
        for slide in slides:
            progress.update(task, description=f"uploading {slide.path.name}")
            up = upload_slide(client, settings, slide, lambda n: progress.advance(task, n))
            if settings.publish_events:
                publish_s3_event(settings, up.bucket, up.key, up.size, up.etag)
            done.append(up)
    for up in done:
        note(f"submitted {up.path} as s3://{up.bucket}/{up.key} ({up.objects} objects)")
    return done


def _wait(
    follower: ResultFollower, uploaded: list[Uploaded], timeout: float, as_json: bool
) -> None:
    import time

    from histoprompt.client.errors import SlideFailedError
    from histoprompt.client.events import event_row
    from histoprompt.client.output import note
    from histoprompt.core.errors import ServiceUnavailableError

    deadline = time.monotonic() + timeout
    failed: list[str] = []
    for up in uploaded:
        ev = follower.wait_for(up.slide_id, max(0.0, deadline - time.monotonic()))
        if ev is None:
            raise ServiceUnavailableError(
                f"no result for slide {up.slide_id} within {timeout:.0f} s; is the ingest "
                "service running? (`histoprompt status`)"
            )
        row = event_row(ev)
        note(
            f"{ev.slide_id}: {ev.status}, {ev.n_tiles} tiles, {ev.seconds.total:.1f} s"
            + (f", error {ev.error.code}: {ev.error.message}" if ev.error else "")
        )
        if as_json:
            import json

            typer.echo(json.dumps(row))
        if ev.status == "failed":
            failed.append(ev.slide_id)
    if failed:
        raise SlideFailedError(f"processing failed for {', '.join(failed)} (see above)")
