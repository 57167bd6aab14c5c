"""Every documented --help example, run through CliRunner against in-memory fakes of S3,
Kafka and Triton (the real services are in tests/integration/test_cli_*.py)."""

from __future__ import annotations

import csv
import io
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from histoprompt.client import consumers, events, health, pathway_query, services
from histoprompt.client.cli import app
from histoprompt.client.commands import submit as submit_cmd
from histoprompt.client.errors import EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE
from histoprompt.core.results import ResultStore, SlideResult
from histoprompt.core.schemas import (
    PathwayScore,
    ResultEvent,
    ResultManifest,
    SeriesManifest,
    slide_id_for,
)

SID = "0123456789abcdef"
TESTED_EXAMPLES = [
    "histoprompt submit slide.svs --wait",
    "histoprompt submit slide.svs series_dir/ --wait",
    "histoprompt watch --once",
    "histoprompt results 0123456789abcdef --format csv --out scores.csv",
    "histoprompt query 0123456789abcdef -g E2F_TARGETS --genes CD3E,CD8A,GZMB,PRF1,IFNG",
    "histoprompt predict slide.svs -g HYPOXIA -g E2F_TARGETS",
    "histoprompt heatmap 0123456789abcdef --gene-set HYPOXIA --out hypoxia.png",
    "histoprompt status --json",
    "histoprompt gene-sets list --contains INTERFERON",
    "histoprompt gene-sets show E2F_TARGETS",
    "histoprompt gene-sets show HYPOXIA",
]
runner = CliRunner()


def run(example: str) -> Any:
    assert example in TESTED_EXAMPLES
    return runner.invoke(app, shlex.split(example)[1:])


# -- fakes -------------------------------------------------------------------------------


@dataclass
class _Stat:
    size: int


@dataclass
class _Put:
    etag: str


@dataclass
class _Obj:
    object_name: str


@dataclass
class FakeS3:
    """Just enough of minio for the CLI: one namespace per bucket, puts recorded in order."""

    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    fail_on_put: int | None = None

    def bucket_exists(self, bucket: str) -> bool:
        return True

    def put_object(self, bucket: str, key: str, data: Any, length: int, **kw: Any) -> _Put:
        if self.fail_on_put is not None and len(self.order) == self.fail_on_put:
            raise KeyboardInterrupt
        body = data.read(length)
        if kw.get("progress") is not None:
            kw["progress"].update(len(body))
        self.objects[(bucket, key)] = body
        self.order.append(key)
        import hashlib

        return _Put(f'"{hashlib.md5(body).hexdigest()}"')  # noqa: S324 - an ETag

    def remove_object(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)
        self.removed.append(key)

    def get_object(self, bucket: str, key: str, offset: int = 0, length: int = 0) -> Any:
        from minio.error import S3Error

        if (bucket, key) not in self.objects:
            raise S3Error(None, "NoSuchKey", "missing", key, "r", "h")  # type: ignore[arg-type]
        data = self.objects[(bucket, key)]
        body = io.BytesIO(data[offset : offset + length] if length else data[offset:])
        body.release_conn = lambda: None  # type: ignore[attr-defined]
        return body

    def stat_object(self, bucket: str, key: str) -> _Stat:
        return _Stat(len(self.get_object(bucket, key).read()))

    def list_objects(self, bucket: str, prefix: str = "", recursive: bool = False) -> list[_Obj]:
        return [_Obj(k) for b, k in self.objects if b == bucket and k.startswith(prefix)]


class FakeFollower:
    """ResultFollower over a list; `wait_for` answers a 'done' event for any slide."""

    backlog_events: list[ResultEvent] = []

    def __init__(self, settings: Any, from_beginning: bool) -> None:
        self.from_beginning = from_beginning

    def __enter__(self) -> FakeFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None

    def backlog(self) -> list[ResultEvent]:
        return list(self.backlog_events)

    def wait_for(self, slide_id: str, timeout_s: float) -> ResultEvent:
        return _event(slide_id, "done")


def _event(slide_id: str, status: str) -> ResultEvent:
    return ResultEvent.model_validate(
        {
            "slide_id": slide_id,
            "source": {"bucket": "histoprompt-slides", "key": "k", "etag": "e"},
            "model": {"name": "tiny", "version": "v1"},
            "status": status,
            "n_tiles": 12,
            "seconds": {"read": 0.5, "infer": 1.0, "total": 2.0},
            "error": None if status == "done" else {"code": "no_tissue", "message": "blank"},
        }
    )


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeS3:
    import os

    for key in list(os.environ):
        if key.startswith("HISTOPROMPT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    fake = FakeS3()
    monkeypatch.setattr(services, "minio_client", lambda settings: fake)
    return fake


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    published: list[dict[str, Any]] = []

    class Producer:
        def close(self) -> None:
            return None

    monkeypatch.setattr(services, "kafka_producer", lambda settings: Producer())
    monkeypatch.setattr(
        events,
        "publish_s3_event",
        lambda settings, bucket, key, size, etag: published.append(
            {"bucket": bucket, "key": key, "size": size, "etag": etag}
        ),
    )
    monkeypatch.setattr(events, "ResultFollower", FakeFollower)
    monkeypatch.setattr(consumers, "describe_group", lambda settings: _group(WORKER))
    return published


# kafka-python's describe_groups answer for a group with one ingest worker (as the local
# broker gives it).
WORKER = {
    "member_id": "histoprompt-ingest-node1-00d0c773",
    "group_instance_id": None,
    "client_id": "histoprompt-ingest-node1",
    "client_host": "/10.0.0.7",
    "member_metadata": {"topics": ["histoprompt.slides.incoming"], "user_data": ""},
    "member_assignment": {
        "assigned_partitions": [{"topic": "histoprompt.slides.incoming", "partitions": [2, 0]}],
        "user_data": "",
    },
}


def _group(*members: dict[str, Any]) -> consumers.GroupState:
    state = "Stable" if members else "Empty"
    described = {"histoprompt-ingest": {"group_state": state, "members": list(members)}}
    return consumers.parse_group("histoprompt-ingest", described)


def _store_result(
    s3: FakeS3,
    n_tiles: int = 6,
    source_key: str = "uploads/x/slide.svs",
    pathways: dict[str, PathwayScore] | None = None,
) -> None:
    """A SYNTHETIC result written with the core ResultStore (what ingest would write)."""
    rng = np.random.default_rng(1)
    xs, ys = np.meshgrid(np.arange(3) * 256, np.arange(2) * 256)
    tiles = pd.DataFrame(
        {
            "level": 0,
            "x": xs.ravel()[:n_tiles],
            "y": ys.ravel()[:n_tiles],
            "tissue_fraction": 0.8,
            "attention": np.linspace(0.0, 1.0, n_tiles),
        }
    )
    emb = rng.normal(size=16).astype(np.float32)
    result = SlideResult(
        tiles=tiles,
        tile_embeddings=rng.normal(size=(n_tiles, 8)).astype(np.float32),
        slide_embedding=emb / np.linalg.norm(emb),
        pathways=pathways
        or {
            "HALLMARK_HYPOXIA": PathwayScore(score=0.1, method="soft-knn", coverage=0.9),
            "HALLMARK_E2F_TARGETS": PathwayScore(score=0.7, method="soft-knn", coverage=0.95),
            "HALLMARK_APOPTOSIS": PathwayScore(score=-0.3, method="soft-knn", coverage=0.8),
        },
    )
    manifest = ResultManifest.model_validate(
        {
            "slide_id": SID,
            "source": {"bucket": "histoprompt-slides", "key": source_key, "etag": "e"},
            "model": {"name": "tiny", "version": "v1"},
            "status": "done",
            "n_tiles": n_tiles,
            "seconds": {"read": 1, "infer": 1, "total": 2},
            "software_version": "0.1.0",
            "synthetic": True,
        }
    )
    ResultStore(s3, "histoprompt-results").write(manifest, result)  # type: ignore[arg-type]


def _tiff(path: Path, shape: tuple[int, int] = (96, 160)) -> Path:
    import tifffile

    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 255, (*shape, 3), dtype=np.uint8), photometric="rgb")
    return path


def _series(path: Path) -> list[Path]:
    from histoprompt.export.synthetic_wsi import (
        DicomSeriesSpec,
        TransferSyntax,
        write_dicom_series,
    )

    return write_dicom_series(
        path, DicomSeriesSpec(512, 256, levels=2, syntax=TransferSyntax.explicit_le)
    )


# -- submit ------------------------------------------------------------------------------


def test_example_submit_single_file_wait(
    s3: FakeS3, kafka: list[dict[str, Any]], tmp_path: Path
) -> None:
    _tiff(tmp_path / "slide.svs")
    res = run("histoprompt submit slide.svs --wait")
    assert res.exit_code == 0, res.output
    (ev,) = kafka
    sid = res.stdout.strip()
    assert sid == slide_id_for(ev["bucket"], ev["key"], ev["etag"])
    assert s3.objects[("histoprompt-slides", ev["key"])] == (tmp_path / "slide.svs").read_bytes()
    assert ev["key"].endswith("/slide.svs") and "done, 12 tiles" in res.stderr


def test_example_submit_file_and_series_manifest_last(
    s3: FakeS3, kafka: list[dict[str, Any]], tmp_path: Path
) -> None:
    _tiff(tmp_path / "slide.svs")
    instances = _series(tmp_path / "series_dir")
    res = run("histoprompt submit slide.svs series_dir/ --wait")
    assert res.exit_code == 0, res.output
    ids = res.stdout.split()
    assert len(ids) == 2 and len(kafka) == 2
    series_ev = kafka[1]
    assert series_ev["key"].endswith("/manifest.json")
    assert s3.order[-1] == series_ev["key"]  # the manifest is the last object written
    manifest = SeriesManifest.model_validate_json(
        s3.objects[("histoprompt-slides", series_ev["key"])]
    )
    assert [i.size for i in manifest.instances] == [p.stat().st_size for p in instances]
    assert all(("histoprompt-slides", i.key) in s3.objects for i in manifest.instances)
    assert ids[1] == slide_id_for(series_ev["bucket"], series_ev["key"], series_ev["etag"])


def test_submit_validates_every_path_before_uploading(
    s3: FakeS3, kafka: list[dict[str, Any]], tmp_path: Path
) -> None:
    _tiff(tmp_path / "good.svs")
    (tmp_path / "bad.svs").write_text("a text file")
    res = runner.invoke(app, ["submit", "good.svs", "bad.svs"])
    assert res.exit_code == EXIT_INVALID and "bad.svs" in res.stderr
    assert s3.objects == {} and kafka == []


def test_interrupted_series_upload_leaves_no_manifest(
    s3: FakeS3, kafka: list[dict[str, Any]], tmp_path: Path
) -> None:
    _series(tmp_path / "series_dir")
    s3.fail_on_put = 1  # Ctrl-C while the second instance goes up
    res = runner.invoke(app, ["submit", "series_dir"])
    assert res.exit_code != 0
    assert s3.objects == {} and len(s3.removed) == 1 and kafka == []
    assert not any(k.endswith("manifest.json") for k in s3.order)


def test_submit_wait_reports_failure(
    s3: FakeS3, kafka: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiff(tmp_path / "slide.svs")
    monkeypatch.setattr(FakeFollower, "wait_for", lambda self, sid, t: _event(sid, "failed"))
    res = runner.invoke(app, ["submit", "slide.svs", "--wait"])
    assert res.exit_code == EXIT_USAGE and "processing failed" in res.stderr
    assert "no_tissue" in res.stderr


def test_submit_wait_without_an_ingest_worker_says_so_in_one_line_and_exits_3(
    s3: FakeS3, kafka: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiff(tmp_path / "slide.svs")
    asked: list[float] = []

    def empty(settings: Any) -> consumers.GroupState:
        asked.append(1.0)
        return _group()

    monkeypatch.setattr(consumers, "describe_group", empty)
    monkeypatch.setattr(submit_cmd, "MEMBERS_TIMEOUT_S", 1.0)
    res = runner.invoke(app, ["submit", "slide.svs", "--wait", "--timeout", "60"])
    assert res.exit_code == EXIT_UNAVAILABLE
    [line] = res.stderr.strip().splitlines()
    assert "no ingest worker" in line and "histoprompt-ingest run --env-file stack.env" in line
    assert len(asked) >= 2  # asked again within the timeout, not once
    assert s3.objects == {} and kafka == []  # nothing uploaded for a wait that cannot end


def test_submit_wait_takes_a_worker_that_joins_within_the_timeout(
    s3: FakeS3, kafka: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiff(tmp_path / "slide.svs")
    answers = [_group(), _group(WORKER)]
    monkeypatch.setattr(consumers, "describe_group", lambda settings: answers.pop(0))
    res = runner.invoke(app, ["submit", "slide.svs", "--wait"])
    assert res.exit_code == 0, res.output
    assert answers == [] and len(kafka) == 1


def test_submit_without_wait_does_not_ask_for_workers(
    s3: FakeS3, kafka: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiff(tmp_path / "slide.svs")

    def fail(settings: Any) -> consumers.GroupState:
        raise AssertionError("no --wait, no group lookup")

    monkeypatch.setattr(consumers, "describe_group", fail)
    assert runner.invoke(app, ["submit", "slide.svs"]).exit_code == 0


def test_group_members_parse_with_their_incoming_partitions() -> None:
    other = dict(WORKER, member_id="m2", client_id="c2", member_assignment=None)
    group = _group(WORKER, other)
    assert group.state == "Stable"
    first, second = group.members
    assert (first.client_id, first.host, first.partitions) == (
        "histoprompt-ingest-node1",
        "10.0.0.7",
        (0, 2),
    )
    assert second.partitions == ()
    assert consumers.parse_group("histoprompt-ingest", {}).members == ()


# -- watch / results / query / heatmap / status ------------------------------------------


def test_example_watch_once(
    s3: FakeS3, kafka: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        FakeFollower, "backlog_events", [_event("a" * 16, "done"), _event("b" * 16, "failed")]
    )
    res = run("histoprompt watch --once")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["slide", "status", "tiles", "seconds"]
    assert lines[1].split("\t")[:4] == ["a" * 16, "done", "12", "2.0000"]
    assert lines[2].split("\t")[-1] == "no_tissue"


def test_example_results_csv(s3: FakeS3) -> None:
    _store_result(s3)
    res = run("histoprompt results 0123456789abcdef --format csv --out scores.csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(Path("scores.csv").read_text())))
    assert [r["gene_set"] for r in rows] == [
        "HALLMARK_E2F_TARGETS",
        "HALLMARK_HYPOXIA",
        "HALLMARK_APOPTOSIS",
    ]
    assert [float(r["score"]) for r in rows] == [0.7, 0.1, -0.3]
    assert rows[0]["method"] == "soft-knn" and float(rows[0]["coverage"]) == 0.95


def test_results_show_readable_scores_when_stored(s3: FakeS3) -> None:
    _store_result(s3)
    res = runner.invoke(app, ["results", SID, "--format", "csv", "--out", "plain.csv"])
    assert res.exit_code == 0, res.output
    assert Path("plain.csv").read_text().splitlines()[0] == "gene_set,score,method,coverage"
    readable = {
        "HALLMARK_HYPOXIA": PathwayScore(
            score=0.1, method="soft_knn", coverage=0.9, percentile=90.0, z=1.25
        )
    }
    _store_result(s3, pathways=readable)
    res = runner.invoke(app, ["results", SID, "--format", "csv", "--out", "readable.csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(Path("readable.csv").read_text())))
    assert float(rows[0]["percentile"]) == 90.0 and float(rows[0]["z"]) == 1.25


def test_results_json_parquet_and_unknown_slide(s3: FakeS3, tmp_path: Path) -> None:
    _store_result(s3)
    body = json.loads(runner.invoke(app, ["--json", "results", SID]).stdout)
    assert body["synthetic"] is True and body["model"]["version"] == "v1"
    assert body["pathways"][0]["gene_set"] == "HALLMARK_E2F_TARGETS"
    res = runner.invoke(app, ["results", SID, "-f", "parquet", "-o", "s.parquet"])
    assert res.exit_code == 0
    assert pd.read_parquet("s.parquet")["score"].tolist() == [0.7, 0.1, -0.3]
    res = runner.invoke(app, ["results", "f" * 16])
    assert res.exit_code == EXIT_NOT_FOUND and "no result for slide" in res.stderr


def test_results_of_a_failed_slide_is_one_line_with_its_error(s3: FakeS3) -> None:
    manifest = ResultManifest.model_validate(
        {
            "slide_id": SID,
            "source": {"bucket": "histoprompt-slides", "key": "uploads/x/s.dcm", "etag": "e"},
            "model": {"name": "tiny", "version": "v1"},
            "status": "failed",
            "n_tiles": 0,
            "seconds": {"total": 0.2},
            "software_version": "0.1.0",
            "error": {"code": "truncated", "message": "frame 3 is cut short"},
        }
    )
    ResultStore(s3, "histoprompt-results").write_failure(manifest)  # type: ignore[arg-type]
    res = runner.invoke(app, ["results", SID])
    assert res.exit_code == EXIT_INVALID
    assert f"slide {SID} failed in ingest (truncated: frame 3 is cut short)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.fixture
def triton(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """A fake pathway_query: score = slide-embedding sum x number of genes (deterministic)."""
    requests: list[list[str]] = []

    def fake(settings: Any, embedding: Any, gene_sets: list[str], method: Any) -> Any:
        requests.append(gene_sets)
        sizes = [len(json.loads(g)["genes"]) if g.startswith("{") else 200 for g in gene_sets]
        base = float(np.sum(embedding))
        used = (method or "soft-knn").replace("-", "_")
        pct = np.array([62.5] + [np.nan] * (len(gene_sets) - 1))  # NaN: off the ssGSEA scale
        return np.array([base * n for n in sizes]), np.array([0.8] * len(gene_sets)), used, pct

    monkeypatch.setattr(pathway_query, "run_pathway_query", fake)
    monkeypatch.setattr(pathway_query, "reference_genes", lambda s: ("CD3E", "CD8A", "GZMB"))
    return requests


def test_example_query(s3: FakeS3, triton: list[list[str]]) -> None:
    _store_result(s3)
    res = run("histoprompt query 0123456789abcdef -g E2F_TARGETS --genes CD3E,CD8A,GZMB,PRF1,IFNG")
    assert res.exit_code == 0, res.output
    (sent,) = triton
    assert sent[0] == "HALLMARK_E2F_TARGETS"  # bundled sets go by name
    assert json.loads(sent[1]) == {
        "name": "custom",
        "genes": ["CD3E", "CD8A", "GZMB", "PRF1", "IFNG"],
    }
    rows = {ln.split("\t")[0]: ln.split("\t") for ln in res.stdout.splitlines()[1:]}
    assert rows["custom"][-1] == "PRF1,IFNG"  # unknown genes against the reference
    assert rows["custom"][5] == "4/5" and rows["HALLMARK_E2F_TARGETS"][5] == "160/200"
    assert rows["HALLMARK_E2F_TARGETS"][4] == "62.5" and rows["custom"][4] == "-"  # percentile
    assert rows["custom"][2] == "soft_knn"


def test_query_bad_input(s3: FakeS3, triton: list[list[str]], tmp_path: Path) -> None:
    _store_result(s3)
    assert runner.invoke(app, ["query", SID, "--genes", " , "]).exit_code == EXIT_INVALID
    assert runner.invoke(app, ["query", SID, "-g", "NOPE_NOT_A_SET"]).exit_code == EXIT_NOT_FOUND
    assert runner.invoke(app, ["query", SID]).exit_code == EXIT_USAGE
    assert runner.invoke(app, ["query", "f" * 16, "-g", "HYPOXIA"]).exit_code == EXIT_NOT_FOUND
    assert triton == []  # nothing reached Triton
    gmt = tmp_path / "two.gmt"
    gmt.write_text("A_SET\td\tCD3E\tCD8A\nB_SET\td\tGZMB\n")
    res = runner.invoke(app, ["--json", "query", SID, "--gmt", str(gmt), "-m", "prototype"])
    body = json.loads(res.stdout)
    assert [r["gene_set"] for r in body["results"]] == ["A_SET", "B_SET"] or [
        r["gene_set"] for r in body["results"]
    ] == ["B_SET", "A_SET"]
    assert {r["method"] for r in body["results"]} == {"prototype"}
    assert [r["found"] for r in body["results"]] == [
        round(0.8 * r["genes"]) for r in body["results"]
    ]


def test_example_heatmap(s3: FakeS3, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from histoprompt.client.commands import heatmap as heatmap_cmd

    _store_result(s3)
    source = _tiff(Path("src.tiff"), shape=(600, 900))
    s3.objects[("histoprompt-slides", "uploads/x/slide.svs")] = source.read_bytes()

    def fake(settings: Any, emb: Any, gs: Any, **kw: Any) -> Any:
        scores = np.asarray(emb, dtype=float).sum(axis=1)
        return scores, np.linspace(30.0, 70.0, len(scores))  # against the reference

    monkeypatch.setattr(heatmap_cmd, "score_tiles", fake)
    res = run("histoprompt heatmap 0123456789abcdef --gene-set HYPOXIA --out hypoxia.png")
    assert res.exit_code == 0, res.output
    with Image.open("hypoxia.png") as im:
        assert im.text["Units"] == "percentile vs the reference cohort"
    img = _heatmap_map("hypoxia.png")
    assert abs(img.shape[1] / img.shape[0] - 900 / 600) < 0.01  # the source slide's ratio
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    assert "source TIFF" in res.stderr


def test_heatmap_writes_tiles_parquet_and_geojson_regions(
    s3: FakeS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geojson
    from PIL import Image

    from histoprompt.client.commands import heatmap as heatmap_cmd

    _store_result(s3)
    seen: dict[str, Any] = {}

    def fake(settings: Any, emb: Any, gs: Any, **kw: Any) -> Any:
        seen.update(kw)
        return np.asarray(emb, dtype=float).sum(axis=1), None  # no reference percentiles

    monkeypatch.setattr(heatmap_cmd, "score_tiles", fake)
    res = runner.invoke(
        app,
        shlex.split(
            f"heatmap {SID} -g HYPOXIA --out h.png --tiles t.parquet --geojson r.geojson "
            "--threshold 50"
        ),
    )
    assert res.exit_code == 0, res.output
    assert seen["method"] == "context" and seen["xy"].shape == (6, 2)
    table = pd.read_parquet("t.parquet")
    assert list(table.columns) == ["level", "x", "y", "score", "percentile"]
    assert table["percentile"].min() == 0 and table["percentile"].max() == 100
    doc = geojson.loads(Path("r.geojson").read_text())
    assert doc.is_valid, doc.errors()
    assert sum(f["properties"]["n_tiles"] for f in doc["features"]) == 3  # >= P50 of 6
    with Image.open("h.png") as im:
        assert im.text["Title"].startswith("HALLMARK_HYPOXIA") and im.text["Method"] == "context"
        assert im.text["Units"] == "percentile of this slide's tiles"
    assert "regions >= P50" in res.stderr


def _heatmap_map(path: str) -> np.ndarray:
    """The map part of a heatmap figure (the legend panel is on its right: MapBox)."""
    from PIL import Image

    with Image.open(path) as im:
        left, top, right, bottom = (int(v) for v in im.text["MapBox"].split(","))
        return np.asarray(im.convert("RGB"))[top:bottom, left:right]


def test_heatmap_render_colours_follow_values() -> None:
    from histoprompt.client.heatmap_render import SlideGeometry, render_heatmap

    tiles = pd.DataFrame({"x": [0, 100, 0, 100], "y": [0, 0, 100, 100]})
    img = render_heatmap(tiles, np.array([0, 1, 2, 3.0]), SlideGeometry(200, 200, "t"), None, 200)
    px = np.asarray(img)
    low, high = px[50, 50].astype(int), px[150, 150].astype(int)
    assert img.size == (200, 200)
    assert high.sum() > low.sum()  # viridis: bright yellow for the highest value


def test_example_status_json_exit_3_when_down(s3: FakeS3, monkeypatch: pytest.MonkeyPatch) -> None:
    checks = [
        health.Check("triton", True, "ok", {"models": {"pathway_query": "1:READY"}}),
        health.Check("kafka", False, "Kafka unreachable"),
        health.Check("s3", True, "ok"),
        health.Check("prometheus", True, "ok", {"tiles/s": 3.5}),
    ]
    monkeypatch.setattr(health, "run_checks", lambda settings: checks)
    res = run("histoprompt status --json")
    assert res.exit_code == EXIT_UNAVAILABLE
    body = json.loads(res.stdout)
    assert body["ok"] is False
    assert [s["service"] for s in body["services"] if not s["ok"]] == ["kafka"]
    members = [{"client_id": "histoprompt-ingest-node1", "host": "10.0.0.7", "partitions": [0, 2]}]
    checks[1] = health.Check("kafka", True, "ok", {"lag": 0, "members": members})
    res = runner.invoke(app, ["status"])
    assert res.exit_code == 0
    row = next(ln for ln in res.stdout.splitlines() if "histoprompt-ingest-node1" in ln)
    assert "10.0.0.7" in row and "0,2" in row
    body = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    [kafka] = [s for s in body["services"] if s["service"] == "kafka"]
    assert kafka["figures"]["members"] == members


MAX_BATCH = 8


class FakeTriton:
    """ingest's TritonClient surface: patch_embed = per-tile mean colour, scores = sums."""

    calls: list[tuple[str, Any]] = []

    def __init__(
        self, url: str, timeout_s: float, attempts: int, base_s: float, tls: Any = None
    ) -> None:
        return None

    async def served_model(self) -> Any:
        from histoprompt.core.modelspec import EncoderSpec
        from histoprompt.wsi.triton import ServedModel

        spec = EncoderSpec(
            name="tiny",
            tile_px=64,
            input_px=32,
            target_mpp=0.5,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            embed_dim=3,
            untrained=True,
        )
        # below ScoringOptions' default batch, so predict must split its requests
        return ServedModel(spec, "v1", "tiny", True, "soft-knn", max_batch_size=MAX_BATCH)

    async def patch_embed(self, tiles: np.ndarray) -> np.ndarray:
        self.calls.append(("patch_embed", tiles.shape))
        return tiles.reshape(tiles.shape[0], -1, 3).mean(axis=1).astype(np.float32)

    async def slide_to_pathways(self, emb: np.ndarray, sets: list[str]) -> dict[str, np.ndarray]:
        self.calls.append(("slide_to_pathways", list(sets)))
        k = len(sets)
        return {
            "SCORES": np.arange(k, dtype=np.float32).reshape(1, k),
            "COVERAGE": np.full(k, 0.9, dtype=np.float32),
            "SLIDE_EMBEDDING": emb.mean(axis=0, keepdims=True),
            "ATTENTION": np.full(emb.shape[0], 1 / emb.shape[0], dtype=np.float32),
        }

    async def close(self) -> None:
        return None


def test_example_predict_uses_the_ingest_reader_and_tiler(
    s3: FakeS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("histoprompt.wsi.tiling")
    # Import every ingest module predict uses before patching, so none of them (e.g. the
    # service, which binds TritonClient at import) keeps the fake after this test.
    import histoprompt.ingest.service
    import histoprompt.wsi.sources  # noqa: F401
    from histoprompt.export.synthetic_tiff import write_tiff
    from histoprompt.wsi import triton as ingest_triton

    monkeypatch.setattr(ingest_triton, "TritonClient", FakeTriton)
    FakeTriton.calls = []
    write_tiff(tmp_path / "slide.svs", 512, 384, levels=2, tile=128)  # SYNTHETIC
    res = run("histoprompt predict slide.svs -g HYPOXIA -g E2F_TARGETS")
    assert res.exit_code == 0, res.output
    kinds = [c[0] for c in FakeTriton.calls]
    assert kinds[-1] == "slide_to_pathways" and "patch_embed" in kinds
    assert FakeTriton.calls[-1][1] == ["HALLMARK_HYPOXIA", "HALLMARK_E2F_TARGETS"]
    n_tiles = sum(c[1][0] for c in FakeTriton.calls if c[0] == "patch_embed")
    assert all(c[1][1:] == (64, 64, 3) for c in FakeTriton.calls if c[0] == "patch_embed")
    assert n_tiles > MAX_BATCH
    assert all(c[1][0] <= MAX_BATCH for c in FakeTriton.calls if c[0] == "patch_embed")
    rows = [ln.split("\t") for ln in res.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["HALLMARK_E2F_TARGETS", "HALLMARK_HYPOXIA"]  # by score
    assert 0 < n_tiles <= (512 // 64) * (384 // 64)
    (tmp_path / "x.svs").write_text("no")
    assert runner.invoke(app, ["predict", "x.svs"]).exit_code == EXIT_INVALID
    assert histoprompt.ingest.service.TritonClient is not FakeTriton


def test_example_gene_sets(s3: FakeS3) -> None:
    res = run("histoprompt gene-sets list --contains INTERFERON")
    names = [ln.split("\t")[0] for ln in res.stdout.splitlines()[1:]]
    assert names == ["HALLMARK_INTERFERON_ALPHA_RESPONSE", "HALLMARK_INTERFERON_GAMMA_RESPONSE"]
    res = run("histoprompt gene-sets show E2F_TARGETS")
    assert res.exit_code == 0
    head, genes = res.stdout.splitlines()
    assert head.startswith("HALLMARK_E2F_TARGETS (200 genes)") and len(genes.split()) == 200
    res = run("histoprompt gene-sets show HYPOXIA")
    assert res.stdout.startswith("HALLMARK_HYPOXIA (200 genes)")
    assert "VEGFA" in res.stdout.splitlines()[1].split()


def test_watch_streams_lines_when_piped_until_ctrl_c(
    s3: FakeS3, kafka: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def stream(self: FakeFollower) -> Any:
        yield _event("c" * 16, "done")
        yield _event("d" * 16, "failed")
        raise KeyboardInterrupt

    monkeypatch.setattr(FakeFollower, "stream", stream, raising=False)
    res = runner.invoke(app, ["watch"])
    assert res.exit_code == 130
    lines = res.stdout.splitlines()
    assert lines[0].startswith("slide\tstatus") and lines[1].startswith("c" * 16 + "\tdone")
    assert lines[2].split("\t")[1] == "failed"
    res = runner.invoke(app, ["watch", "--json"])
    assert [json.loads(ln)["slide"] for ln in res.stdout.splitlines()] == ["c" * 16, "d" * 16]


def test_heatmap_falls_back_to_the_tile_grid_without_a_source(s3: FakeS3) -> None:

    _store_result(s3, source_key="uploads/gone/slide.svs")  # the source object is missing
    res = runner.invoke(app, ["heatmap", SID, "--out", "grid.png", "--size", "300"])
    assert res.exit_code == 0, res.output
    assert "tile grid extent" in res.stderr and "no thumbnail" in res.stderr
    img = _heatmap_map("grid.png")
    # 3 x 2 tiles of 256 px: the grid's extent is 768 x 512, i.e. 300 x 200 px here.
    assert img.shape[:2] == (200, 300)
    left, right = img[100, 20].astype(int), img[100, 280].astype(int)
    assert not np.array_equal(left, right)  # attention rises left to right
