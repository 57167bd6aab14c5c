"""`make demo` step: serve the demo model, run the ingest service, upload a SYNTHETIC slide,
print its pathway scores.

As a stack demo step: `histoprompt.stack.ingest_demo:demo_step` (a `(handle, console)`
callable). Standalone against a running stack:
`python -m histoprompt.stack.ingest_demo --env-file stack.env`.

It sits above the ingest package, not in it: the ingest image ships without demo or test
support. Like every demo step it runs in the dev workspace, where histoprompt-ingest and
histoprompt-export (torch, for the demo model) are installed; both are imported lazily, so
the stack package itself depends on neither.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from histoprompt.core import names
from histoprompt.stack.errors import StackError

if TYPE_CHECKING:
    from rich.console import Console

    from histoprompt.ingest.service import IngestService
    from histoprompt.ingest.settings import IngestSettings

MODELS_IN_ORDER = (
    names.MODEL_TILE_PREPROCESS,
    names.MODEL_TILE_ENCODER,
    names.MODEL_SLIDE_EMBED,
    names.MODEL_PATHWAY_QUERY,
    names.MODEL_PATCH_EMBED,
    names.MODEL_SLIDE_TO_PATHWAYS,
)


def load_demo_model(
    triton_grpc: str,
    model_repository: Path,
    work_dir: Path,
    grpc_options: dict[str, Any] | None = None,
) -> Any:
    """Write the demo bundle (tiny UNTRAINED encoder, SYNTHETIC alignment) into the served
    repository and load it in Triton (explicit model control). Returns the DemoBundle.
    `grpc_options`: ConnectionSettings.triton_grpc_options() of a TLS stack."""
    import tritonclient.grpc as grpcclient

    from histoprompt.export.bundle import build_demo_bundle

    bundle = build_demo_bundle(work_dir, seed=0, repo_dir=model_repository)
    client = grpcclient.InferenceServerClient(triton_grpc, **(grpc_options or {}))
    try:
        if _already_served(client, bundle.card.version):
            return bundle
        for model in MODELS_IN_ORDER:
            client.load_model(model)
    finally:
        client.close()
    return bundle


def _already_served(client: Any, version: str) -> bool:
    """True when every model is ready and tile_preprocess serves this model version."""
    try:
        if not all(client.is_model_ready(m) for m in MODELS_IN_ORDER):
            return False
        cfg = client.get_model_config(names.MODEL_TILE_PREPROCESS, as_json=True)
    except Exception:
        return False
    params = cfg.get("config", {}).get("parameters", {})
    return bool(params.get("model_version", {}).get("string_value") == version)


# The thread running_service starts; tests look for it to check that it stopped.
SERVICE_THREAD_NAME = "histoprompt-ingest-service"


class ServiceHarnessError(StackError):
    """The in-process service did not become ready, or did not stop."""

    code = "harness"


@contextmanager
def running_service(
    settings: IngestSettings,
    *,
    timeout_s: float = 120.0,
    settle_s: float = 2.0,
    diagnostics: Callable[[], str] | None = None,
) -> Iterator[IngestService]:
    """An IngestService running in a thread: started, ready (and `settle_s` more, so its
    consumer has joined its group before events arrive), then stopped and joined on exit.

    Raises ServiceHarnessError when it is not ready within `timeout_s` (or its thread dies
    first), and on exit when the thread outlives its shutdown deadline: a thread left running
    would keep the metrics port and the consumer group. `diagnostics` adds context (e.g. a log
    tail) to the not-ready error.
    """
    from histoprompt.ingest.service import IngestService

    service = IngestService(settings)
    thread = threading.Thread(
        target=service.run,
        kwargs={"install_signals": False},
        name=SERVICE_THREAD_NAME,
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not service.health.ready and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not service.health.ready:
            why = "its thread exited" if not thread.is_alive() else f"{timeout_s:.0f} s passed"
            extra = f"\n{diagnostics()}" if diagnostics is not None else ""
            raise ServiceHarnessError(
                f"the ingest service did not become ready ({why}; is the model loaded?){extra}"
            )
        time.sleep(settle_s)
        yield service
    finally:
        service.request_stop()
        thread.join(timeout=settings.ingest_shutdown_deadline_s + 10)
    if thread.is_alive():
        raise ServiceHarnessError("the ingest service thread did not stop within its deadline")


@dataclass(frozen=True)
class DemoResult:
    """What the demo computed for its SYNTHETIC slide: scores read back from S3."""

    slide_id: str
    model_version: str
    result_uri: str
    scores: dict[str, float]


def run_demo(
    settings: IngestSettings,
    console: Console,
    work_dir: Path,
    *,
    top: int = 10,
    publish: bool = True,
) -> DemoResult:
    """Run the service in a thread, upload one SYNTHETIC DICOM-WSI series, print its top
    pathway scores and return them all (read back from the result in S3).

    `publish`: send the S3 events here; False when the bucket sends them itself (MinIO)."""
    from rich.table import Table

    from histoprompt.core.results import ResultStore
    from histoprompt.core.s3 import make_minio
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series
    from histoprompt.stack.feed import (
        TopicWatcher,
        make_producer,
        publish_upload,
        results_of,
        skip_group_to_end,
        upload_series,
    )

    skip_group_to_end(settings, settings.ingest_group_id)
    console.print("starting the ingest service ...")
    with running_service(settings, timeout_s=120):
        watcher = TopicWatcher(settings, names.TOPIC_RESULTS)
        producer = make_producer(settings)
        try:
            paths = write_dicom_series(
                work_dir / "slide", DicomSeriesSpec(width=2048, height=1536, levels=3, tile=256)
            )
            client = make_minio(settings)
            prefix = f"demo/{uuid.uuid4().hex[:8]}"
            up = upload_series(client, settings.slides_bucket, prefix, paths)
            console.print(
                f"uploaded a SYNTHETIC 3-level DICOM-WSI series to "
                f"s3://{settings.slides_bucket}/{prefix}/"
            )
            how = "publishing its S3 events" if publish else "the bucket sends its events"
            console.print(f"slide_id {up.slide_id}; {how} ...")
            t0 = time.monotonic()
            if publish:
                publish_upload(producer, up)
            seen = watcher.wait_for(
                lambda s: any(e.slide_id == up.slide_id for e in results_of(s)), timeout_s=300
            )
        finally:
            producer.close()
            watcher.close()
        event = next((e for e in results_of(seen) if e.slide_id == up.slide_id), None)
        if event is None or event.status != "done":
            raise StackError(f"no done result for the demo slide {up.slide_id}: {event}")
    console.print(
        f"result in {time.monotonic() - t0:.1f} s: {event.n_tiles} tiles, "
        f"model {event.model.version}"
    )
    console.print(f"results in S3: {event.result_uri}")
    pathways = ResultStore(client, settings.results_bucket).read_pathways(up.slide_id)
    table = Table(
        title=f"top {top} Hallmark pathway scores of slide {up.slide_id}\n"
        "(SYNTHETIC slide, UNTRAINED encoder: the numbers mean nothing biologically)"
    )
    table.add_column("gene set")
    table.add_column("score", justify="right")
    table.add_column("coverage", justify="right")
    ranked = sorted(pathways.items(), key=lambda kv: kv[1].score, reverse=True)
    for name, score in ranked[:top]:
        table.add_row(name, f"{score.score:+.3f}", f"{score.coverage:.2f}")
    console.print(table)
    console.print(f"all {len(pathways)} scores: `histoprompt results {up.slide_id}`")
    return DemoResult(
        slide_id=up.slide_id,
        model_version=event.model.version,
        result_uri=event.result_uri or "",
        scores={k: v.score for k, v in pathways.items()},
    )


def demo_step(handle: Any, console: Console, work_dir: Path | None = None) -> DemoResult:
    """The stack demo hook `(StackHandle, Console)`; reuses serve_models' bundle cache.

    `work_dir` holds the demo slide (default: a fresh directory under the stack's state)."""
    from histoprompt.ingest.settings import IngestSettings

    work = work_dir or Path(tempfile.mkdtemp(prefix="ingest-demo-", dir=handle.state_dir))
    console.print("checking the demo model in Triton (tiny UNTRAINED encoder) ...")
    load_demo_model(handle.triton_grpc, handle.model_repository, handle.state_dir / "demo-models")
    settings = IngestSettings.load(
        handle.env_file,
        ingest_group_id="histoprompt-ingest-demo",
        ingest_metrics_port=handle.ingest_metrics_port,
    )
    return run_demo(settings, console, work, publish=bucket_is_silent(handle.env_file))


def bucket_is_silent(env_file: Path) -> bool:
    """True unless stack.env (KEY=value lines, as `up` writes it) says the S3 server sends
    the notifications itself."""
    lines = env_file.read_text().splitlines() if env_file.is_file() else []
    return "HISTOPROMPT_PUBLISH_EVENTS=false" not in (line.strip() for line in lines)


def main(
    env_file: Annotated[Path, typer.Option(help="stack.env of a running stack")] = Path(
        "stack.env"
    ),
    model_repository: Annotated[
        Path | None, typer.Option(help="the repository Triton serves; loads the demo model")
    ] = None,
) -> None:
    """Upload a SYNTHETIC slide through the running stack and print its pathway scores."""
    from rich.console import Console

    from histoprompt.ingest.settings import IngestSettings

    console = Console()
    settings = IngestSettings.load(env_file, ingest_group_id="histoprompt-ingest-demo")
    work = Path(tempfile.mkdtemp(prefix="histoprompt-ingest-demo-"))
    if model_repository is not None:
        load_demo_model(settings.triton_url, model_repository, work)
    run_demo(settings, console, work, publish=bucket_is_silent(env_file))


if __name__ == "__main__":
    typer.run(main)
