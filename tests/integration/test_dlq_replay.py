"""`histoprompt dlq replay` on the real stack: a slide past its deadline is dead-lettered,
fixed (its object replaced), replayed, and gets exactly one result; a second replay sends
nothing. Checked through the results store and the results topic."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from histoprompt.client.cli import app
from histoprompt.core.results import ResultStore
from histoprompt.core.s3 import make_minio
from histoprompt.core.schemas import slide_id_for
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack.feed import (
    TopicWatcher,
    dlq_of,
    make_producer,
    publish_upload,
    put_file,
    results_of,
    skip_group_to_end,
)
from histoprompt.stack.ingest_demo import running_service

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_histoprompt_env")]
runner = CliRunner()


def _replay(env_file: Path, slide_id: str) -> list[dict[str, str]]:
    res = runner.invoke(
        app, ["--env-file", str(env_file), "--json", "dlq", "replay", "--slide", slide_id]
    )
    assert res.exit_code == 0, res.output
    rows: list[dict[str, str]] = json.loads(res.output)
    return rows


def test_a_dead_lettered_slide_fixed_and_replayed_gets_exactly_one_result(
    stack,  # noqa: ANN001
    served_model,  # noqa: ANN001
    dlq: TopicWatcher,
    results: TopicWatcher,
    tmp_path: Path,
) -> None:
    group = f"dlq-replay-{uuid.uuid4().hex[:8]}"
    base = IngestSettings.load(stack.env_file, ingest_group_id=group, ingest_metrics_port=0)
    skip_group_to_end(base, group)
    minio = make_minio(base)
    key = f"dlq-replay/{uuid.uuid4().hex[:12]}/s.svs"
    # SYNTHETIC slides: hundreds of tiles, S3 reads and Triton batches. Batched, a warm stack
    # got through them inside a 1 s deadline in CI; no slide gets through them in 50 ms.
    slow = put_file(
        minio, base.slides_bucket, key, write_tiff(tmp_path / "slow.svs", 3072, 3072, tile=512)
    )
    producer = make_producer(base)
    strict = base.model_copy(update={"ingest_slide_deadline_s": 0.05})
    with running_service(strict, timeout_s=60, settle_s=1.0):
        publish_upload(producer, slow)
        seen = dlq.wait_for(
            lambda s: any(slow.slide_id in [x.slide_id for x in e.slides] for e in dlq_of(s)),
            timeout_s=90,
        )
    mine = [e for e in dlq_of(seen) if slow.slide_id in [x.slide_id for x in e.slides]]
    results.poll(0.5)
    outcomes = [(e.slide_id, e.status) for e in results_of(results.seen)]
    assert len(mine) == 1, f"DLQ events for the slow slide in 90 s: {mine}; results: {outcomes}"
    [event] = mine
    assert event.error.code == "deadline_exceeded"

    # The fix: the object replaced by a small slide (a new etag, so a new slide id).
    small = put_file(minio, base.slides_bucket, key, write_tiff(tmp_path / "ok.svs", 800, 640))
    fixed_id = slide_id_for(small.bucket, key, small.etag)
    assert fixed_id != slow.slide_id
    [row] = _replay(stack.env_file, slow.slide_id)
    assert (row["outcome"], row["sent_as"]) == ("sent", fixed_id), row

    with running_service(base, timeout_s=60, settle_s=1.0):
        results.wait_for(lambda s: any(e.slide_id == fixed_id for e in results_of(s)), 120)
        [again] = _replay(stack.env_file, slow.slide_id)
        assert again["outcome"] == "already replayed"
        results.poll(3.0)  # anything a second send would have produced
    producer.close()
    mine = [e for e in results_of(results.seen) if e.slide_id in (fixed_id, slow.slide_id)]
    assert [(e.slide_id, e.status) for e in mine] == [(fixed_id, "done")]
    store = ResultStore(minio, base.results_bucket)
    assert store.read_manifest(fixed_id).n_tiles == mine[0].n_tiles
    print(f"\nreplayed {slow.slide_id} as {fixed_id}: one result, {mine[0].n_tiles} tiles")  # noqa: T201
