"""One user's session on the real stack: submit -> result -> results -> query -> heatmap ->
status -> predict, with the demo model bundle (tiny encoder, UNTRAINED, SYNTHETIC cohort)
served by Triton and the ingest service consuming Kafka in this process."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from histoprompt.client.cli import app
from histoprompt.core import names
from histoprompt.stack import StackHandle

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("clean_histoprompt_env"),
]

runner = CliRunner()
SERVED = (
    names.MODEL_TILE_PREPROCESS,
    names.MODEL_TILE_ENCODER,
    names.MODEL_PATCH_EMBED,
    names.MODEL_SLIDE_EMBED,
    names.MODEL_PATHWAY_QUERY,
    names.MODEL_SLIDE_TO_PATHWAYS,
    names.MODEL_TILE_CONTEXT,
    names.MODEL_TILE_HEAD,  # loads without an ST head installed
)
SLIDE_W, SLIDE_H = 1024, 768
# The module's ingest consumer group, started at the topic's end: it consumes only this
# module's submits, not the incoming events other modules published earlier in the session.
# The CLI reads the same variable (submit --wait asks it for members, status lists them).
GROUP = f"cli-flow-{uuid.uuid4().hex[:12]}"
GROUP_ENV = {"HISTOPROMPT_INGEST_GROUP_ID": GROUP}


def cli(stack: StackHandle, *args: str) -> Any:
    return runner.invoke(app, ["--env-file", str(stack.env_file), *args], env=GROUP_ENV)


@pytest.fixture(scope="module")
def pipeline(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo bundle loaded in Triton and an ingest service consuming, until module end."""
    import tritonclient.grpc as grpcclient

    from histoprompt.export.bundle import build_demo_bundle
    from histoprompt.ingest.settings import IngestSettings
    from histoprompt.stack.feed import skip_group_to_end
    from histoprompt.stack.ingest_demo import running_service

    bundle = build_demo_bundle(
        tmp_path_factory.mktemp("demo"), seed=0, repo_dir=stack.model_repository
    )
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    try:
        for model in SERVED:
            client.load_model(model)
            assert client.is_model_ready(model), model
    finally:
        client.close()
    conn = {k: getattr(stack.settings, k) for k in type(stack.settings).model_fields}
    group = GROUP
    settings = IngestSettings(
        _env_file=None,  # type: ignore[call-arg]
        **conn,
        ingest_group_id=group,
        ingest_metrics_port=stack.ingest_metrics_port,
    )
    skip_group_to_end(settings, group)
    # Stops the service on exit and raises if its thread outlives the shutdown deadline.
    with running_service(settings, timeout_s=120):
        yield bundle.bundle_dir


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from histoprompt.export.synthetic_tiff import write_tiff
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series

    root = tmp_path_factory.mktemp("flow-slides")
    write_tiff(root / "synthetic.svs", SLIDE_W, SLIDE_H, levels=3)
    write_dicom_series(root / "series", DicomSeriesSpec(SLIDE_W, SLIDE_H, levels=2))
    return {"svs": root / "synthetic.svs", "series": root / "series"}


@pytest.fixture(scope="module")
def submitted(stack: StackHandle, pipeline: Path, slides: dict[str, Path]) -> dict[str, str]:
    res = runner.invoke(
        app,
        [
            "--env-file",
            str(stack.env_file),
            "submit",
            str(slides["svs"]),
            str(slides["series"]),
            "--wait",
            "--timeout",
            "300",
        ],
        env=GROUP_ENV,
    )
    assert res.exit_code == 0, res.output
    svs_id, series_id = res.stdout.split()
    assert f"{svs_id}: done" in res.stderr and f"{series_id}: done" in res.stderr
    return {"svs": svs_id, "series": series_id}


def test_watch_once_lists_both_results(stack: StackHandle, submitted: dict[str, str]) -> None:
    res = cli(stack, "--json", "watch", "--once")
    assert res.exit_code == 0, res.output
    rows = {r["slide"]: r for r in json.loads(res.stdout)}
    for sid in submitted.values():
        assert rows[sid]["status"] == "done" and rows[sid]["tiles"] > 0


def test_results_then_query_agree(stack: StackHandle, submitted: dict[str, str]) -> None:
    sid = submitted["svs"]
    res = cli(stack, "--json", "results", sid)
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    scores = [p["score"] for p in body["pathways"]]
    assert len(scores) == 50 and scores == sorted(scores, reverse=True)
    assert body["synthetic"] is True and body["n_tiles"] > 0
    stored = {p["gene_set"]: p for p in body["pathways"]}
    from histoprompt.core.genesets import load_hallmark

    five = ",".join(load_hallmark().lookup("HYPOXIA").genes[:5]) + ",NOT_A_GENE_XYZ"
    res = cli(stack, "--json", "query", sid, "-g", "HYPOXIA", "-g", "E2F_TARGETS", "--genes", five)
    assert res.exit_code == 0, res.output
    got = {r["gene_set"]: r for r in json.loads(res.stdout)["results"]}
    # The same embedding through the same pathway_query: the stored scores come back.
    for name in ("HALLMARK_HYPOXIA", "HALLMARK_E2F_TARGETS"):
        np.testing.assert_allclose(got[name]["score"], stored[name]["score"], rtol=1e-4, atol=1e-4)
        assert got[name]["coverage"] == pytest.approx(stored[name]["coverage"])
        # readable scores stored by ingest (slide_to_pathways' PERCENTILE / ZSCORE)
        assert 0 <= stored[name]["percentile"] <= 100 and np.isfinite(stored[name]["z"])
        assert got[name]["percentile"] == pytest.approx(stored[name]["percentile"], abs=1e-3)
    custom = got["custom"]
    assert custom["genes"] == 6 and custom["found"] <= 5 and 0 < custom["coverage"] < 1
    assert custom["unknown"] is None  # the served reference lives inside Triton's repository


def test_query_with_the_trained_predictor(
    stack: StackHandle, pipeline: Path, submitted: dict[str, str]
) -> None:
    """`query -m predictor`: the bundle's ONNX heads score Hallmark sets on the stored slide
    embedding; a set they were not trained on is one line that points to soft-knn."""
    from types import SimpleNamespace

    from histoprompt.core.results import ResultStore
    from histoprompt.core.s3 import make_minio
    from histoprompt.serving.predictor import OnnxPredictor

    sid = submitted["svs"]
    res = cli(
        stack, "--json", "query", sid, "-g", "HYPOXIA", "-g", "E2F_TARGETS", "-m", "predictor"
    )
    assert res.exit_code == 0, res.output
    got = {r["gene_set"]: r for r in json.loads(res.stdout)["results"]}
    assert {r["method"] for r in got.values()} == {"predictor"}
    # the same heads, run here on the stored embedding, give the served scores
    store = ResultStore(make_minio(stack.settings), stack.settings.results_bucket)
    emb = store.read_slide_embedding(sid, None).reshape(1, -1)
    local = OnnxPredictor.load(pipeline)
    for name in ("HALLMARK_HYPOXIA", "HALLMARK_E2F_TARGETS"):
        resolved = SimpleNamespace(name=name)  # the predictor looks at the set's name only
        want = local.predict(emb / np.linalg.norm(emb), [resolved])[0, 0]  # type: ignore[list-item]
        np.testing.assert_allclose(got[name]["score"], want, rtol=1e-4, atol=1e-4)

    res = cli(stack, "query", sid, "--genes", "CD3E,CD8A,GZMB,PRF1,IFNG", "-m", "predictor")
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "soft-knn" in lines[0] and "'custom'" in lines[0], res.output


def test_query_names_unknown_genes_from_the_reference_in_s3(
    stack: StackHandle, pipeline: Path, submitted: dict[str, str]
) -> None:
    """With the served reference also in the models bucket, unknown genes are listed."""
    from histoprompt.core.genesets import load_hallmark
    from histoprompt.core.reference_store import load_reference, save_reference_s3
    from histoprompt.core.s3 import make_minio

    ref = load_reference(pipeline / "reference", "synthetic-demo")
    save_reference_s3(ref, make_minio(stack.settings), stack.settings.models_bucket)
    genes = [g for g in load_hallmark().lookup("HYPOXIA").genes if g in set(ref.genes)][:5]
    query = ",".join([*genes, "NOT_A_GENE_XYZ"])
    res = runner.invoke(
        app,
        ["--env-file", str(stack.env_file), "--json", "query", submitted["svs"], "--genes", query],
        env={"HISTOPROMPT_REFERENCE_NAME": ref.name},
    )
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["results"]
    assert row["unknown"] == ["NOT_A_GENE_XYZ"]
    assert row["found"] == 5 and row["coverage"] == pytest.approx(5 / 6)


def test_heatmap_has_the_slide_aspect_ratio_and_content(
    stack: StackHandle, submitted: dict[str, str]
) -> None:
    from PIL import Image

    runs = (
        (submitted["svs"], []),
        (submitted["series"], ["-g", "HYPOXIA"]),  # method context: tile_context, batched
        (submitted["series"], ["-g", "HYPOXIA", "--method", "one-tile-bag"]),
    )
    for sid, extra in runs:
        res = cli(stack, "heatmap", sid, "--out", f"{sid}.png", *extra)
        assert res.exit_code == 0, res.output
        with Image.open(f"{sid}.png") as im:
            left, top, right, bottom = (int(v) for v in im.text["MapBox"].split(","))
            assert im.text["Method"] == (
                extra[-1] if "--method" in extra else "context" if extra else "attention"
            )
            img = np.asarray(im.convert("RGB"))[top:bottom, left:right].astype(np.int16)
        h, w = img.shape[:2]
        assert abs(w / h - SLIDE_W / SLIDE_H) < 0.01
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # thumbnail + overlay
        assert img.std() > 10
        assert "no thumbnail" not in res.stderr
    # no ST head in the demo repository: tile_head is loaded and refuses in one line
    res = cli(stack, "heatmap", submitted["series"], "-g", "HYPOXIA", "--method", "st-head")
    assert res.exit_code == 4, res.output
    assert "spatial-train" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_status_is_all_up(stack: StackHandle, submitted: dict[str, str]) -> None:
    res = cli(stack, "--json", "status")
    body = json.loads(res.stdout)
    assert res.exit_code == 0, body
    triton = next(s for s in body["services"] if s["service"] == "triton")
    for model in SERVED:
        assert triton["figures"]["models"][model].endswith(":READY")
    kafka = next(s for s in body["services"] if s["service"] == "kafka")
    [worker] = kafka["figures"]["members"]  # the module's ingest service, all 4 partitions
    assert worker["partitions"] == [0, 1, 2, 3] and worker["host"] == "127.0.0.1"
    assert worker["client_id"].startswith("histoprompt-ingest-")
    prom = next(s for s in body["services"] if s["service"] == "prometheus")
    assert set(prom["figures"]) >= {"tiles/s", "slides/h", "p95 slide s", "DLQ (total)"}


def test_predict_matches_the_pipeline(
    stack: StackHandle, submitted: dict[str, str], slides: dict[str, Path]
) -> None:
    res = cli(stack, "--json", "predict", str(slides["svs"]), "-g", "HYPOXIA", "-g", "E2F_TARGETS")
    assert res.exit_code == 0, res.output
    local = {r["gene_set"]: r["score"] for r in json.loads(res.stdout)["results"]}
    stored = json.loads(cli(stack, "--json", "results", submitted["svs"]).stdout)["pathways"]
    for row in stored:
        if row["gene_set"] in local:
            np.testing.assert_allclose(local[row["gene_set"]], row["score"], rtol=1e-3, atol=1e-3)
    assert set(local) == {"HALLMARK_HYPOXIA", "HALLMARK_E2F_TARGETS"}


def test_submit_wait_without_a_worker_says_so_within_seconds(
    stack: StackHandle, slides: dict[str, Path]
) -> None:
    import time

    lonely = {"HISTOPROMPT_INGEST_GROUP_ID": f"nobody-{uuid.uuid4().hex[:8]}"}
    t0 = time.monotonic()
    res = runner.invoke(
        app,
        ["--env-file", str(stack.env_file), "submit", str(slides["svs"]), "--wait"],
        env=lonely,
    )
    took = time.monotonic() - t0
    assert res.exit_code == 3, res.output
    [line] = res.stderr.strip().splitlines()
    assert "no ingest worker" in line and "histoprompt-ingest run --env-file stack.env" in line
    # No bound asserted on `took`: without the check it would wait the 1800 s default.
    print(f"\nsubmit --wait without a worker: exit 3 after {took:.1f} s")  # noqa: T201
    status = json.loads(
        runner.invoke(
            app, ["--env-file", str(stack.env_file), "--json", "status"], env=lonely
        ).stdout
    )
    kafka = next(s for s in status["services"] if s["service"] == "kafka")
    assert kafka["figures"]["members"] == [] and "ingest workers 0" in kafka["detail"]
    assert res.stdout == ""  # nothing was uploaded, so no slide_id
