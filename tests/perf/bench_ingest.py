"""`make bench` (ingest part): the ingest data path on the real local stack. Not a test.

1. Data path: `null` encoder (UNTRAINED, trivial compute) so reading and serving dominate.
   The ingest path (S3 ranged reads of only the frames the mask keeps, coalesced; threaded
   decode; batched async gRPC with a bounded window) vs a naive baseline on the same slide
   and tile list (download every object whole, read tile by tile, one gRPC call per tile).
2. Pipeline efficiency: ViT-S/16 (random weights, speed only): ingest path tiles/s vs the
   encoder-only ONNX Runtime limit in-process on the same tiles.
3. Memory: peak RSS of a child process running the ingest data path on SYNTHETIC 10k^2 and
   50k^2 px DICOM-WSI series.
4. Latency: event -> result event p50/p95 for 20 slides with 2 ingest workers
   (`python -m histoprompt.ingest run` subprocesses, one consumer group) and the demo model.

Writes section "## Ingest (bench_ingest.py)" of BENCHMARKS.md and prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from tests.perf.ingest_bytes import sparse_bytes, sparse_lines
from tests.perf.ingest_cpu import (
    append_history,
    cpu_lines,
    cpu_run,
    history_lines,
    load_history,
    stack_groups,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TITLE = "Ingest (bench_ingest.py)"


# -- serving an encoder's patch_embed ---------------------------------------------------------


def serve_encoder(name: str, triton_url: str, repo: Path, work: Path) -> tuple[Any, Path]:
    """Write and load tile_preprocess + tile_encoder + patch_embed for encoder `name`."""
    import tritonclient.grpc as grpcclient

    from histoprompt.core.modelspec import MAX_TILE_BATCH
    from histoprompt.export.encoders import load_encoder
    from histoprompt.export.model_repo import ENCODER_MODELS, write_encoder_repository
    from histoprompt.export.onnx_export import export_tile_encoder
    from histoprompt.wsi.triton import ServedModel

    enc = load_encoder(name, allow_random=True)
    onnx_path = work / f"{name}.onnx"
    export_tile_encoder(enc.module, enc.spec.input_px, onnx_path)
    card = write_encoder_repository(enc.spec, onnx_path, repo)
    client = grpcclient.InferenceServerClient(triton_url)
    for model in ENCODER_MODELS:
        client.load_model(model)
    client.close()
    served = ServedModel(
        spec=enc.spec,
        version=card.version,
        encoder=name,
        synthetic=True,
        pathway_method="n/a",
        max_batch_size=MAX_TILE_BATCH,
    )
    return served, onnx_path


# -- the two data paths -----------------------------------------------------------------------


DATA_PATH_BATCHES = (32, 4)
"""Tiles per patch_embed request and requests in flight of the data path (`--batches`): the
ingest service's defaults (ingest_batch_size, ingest_max_inflight). The rows before the
history's "service's defaults" row ran 16x2, which had cost the same as 32x4 within noise
while Triton's stub dominated; with the last round's changes 32x4 spends less in the gRPC
client and event loop."""
DATA_PATH_PASSES = 4
"""Passes over the data-path slide in one measured run. psutil reads CPU time in clock ticks
(10 ms): on a single pass of the slide's 518 tiles that is 0.02 CPU-ms/tile per process, and
Kafka's share showed as 0.000 or 0.019 from run to run."""


def ingest_settings(env_file: Path, **kw: Any) -> Any:
    from histoprompt.ingest.settings import IngestSettings

    # Triton runs on this host: tiles go through system shared memory, as they would for an
    # ingest replica beside its Triton.
    tiles, inflight = DATA_PATH_BATCHES
    base = {
        "ingest_batch_size": tiles,
        "ingest_max_inflight": inflight,
        "ingest_min_tissue_fraction": 0.25,
        "ingest_triton_shared_memory": True,
    }
    base.update(kw)
    return IngestSettings.load(env_file, **base)


async def _ingest_slide(
    minio: Any, triton: Any, settings: Any, job: Any, served: Any, max_tiles: int | None
) -> dict:
    """One slide through the ingest path: open, plan, embed (clients given)."""
    from histoprompt.wsi.scoring import embed_tiles
    from histoprompt.wsi.sources import open_slide
    from histoprompt.wsi.tiling import TilePlan, plan_tiles

    t0 = time.perf_counter()
    opened = await asyncio.to_thread(open_slide, minio, job, settings.read_limits(), None)
    plan = await asyncio.to_thread(
        plan_tiles, opened.reader, served.spec, min_tissue=settings.ingest_min_tissue_fraction
    )
    if max_tiles is not None and plan.n_tiles > max_tiles:
        plan = TilePlan(
            plan.level,
            plan.read_px,
            plan.tile_px,
            plan.downsample,
            plan.xy0[:max_tiles],
            plan.tissue[:max_tiles],
        )
    emb, _ = await embed_tiles(
        opened.reader, plan, triton, served.spec.embed_dim, settings.scoring_options()
    )
    seconds = time.perf_counter() - t0
    out = {
        "n_tiles": plan.n_tiles,
        "seconds": seconds,
        "gets": opened.gets,
        "bytes_read": opened.bytes_read,
        "bytes_total": sum(o.size for o in opened.objects),
        "emb_sum": float(np.abs(emb).sum()),
    }
    opened.close()
    return out


async def _ingest_async(
    settings: Any, job: Any, served: Any, max_tiles: int | None, passes: int = 1
) -> list[dict]:
    """`passes` slides in a row with one S3 and one Triton client, as the service keeps its
    clients from slide to slide."""
    from histoprompt.core.s3 import make_minio
    from histoprompt.wsi.triton import TritonClient

    minio = make_minio(settings)
    triton = TritonClient(settings.triton_url, 600, 3, 0.5)
    try:
        return [
            await _ingest_slide(minio, triton, settings, job, served, max_tiles)
            for _ in range(passes)
        ]
    finally:
        await triton.close()


def ingest_path(settings: Any, job: Any, served: Any, max_tiles: int | None = None) -> dict:
    return asyncio.run(_ingest_async(settings, job, served, max_tiles))[0]


def ingest_passes(settings: Any, job: Any, served: Any, passes: int) -> dict:
    """The slide `passes` times in one measured run (one pair of clients, as above): n_tiles
    and seconds summed, reads (gets, bytes) of one pass."""
    runs = asyncio.run(_ingest_async(settings, job, served, None, passes))
    out = dict(runs[0])
    out["n_tiles"] = sum(r["n_tiles"] for r in runs)
    out["seconds"] = sum(r["seconds"] for r in runs)
    return out


def _download(minio: Any, bucket: str, key: str) -> bytes:
    """The whole object, as the naive paths read a slide (no ranged reads)."""
    from histoprompt.core.s3 import read_object

    return read_object(minio, bucket, key)


def naive_path(settings: Any, job: Any, served: Any, max_tiles: int | None = None) -> dict:
    """Download everything, then tile by tile with one synchronous gRPC call per tile."""
    import tritonclient.grpc as grpcclient

    from histoprompt.core import names
    from histoprompt.core.s3 import make_minio
    from histoprompt.core.schemas import SeriesManifest
    from histoprompt.wsi.dicom import DicomSlide, ReadLimits
    from histoprompt.wsi.ranged import BytesSource
    from histoprompt.wsi.tiling import plan_tiles, read_tiles

    minio = make_minio(settings)
    client = grpcclient.InferenceServerClient(settings.triton_url)
    t0 = time.perf_counter()

    def get(key: str) -> bytes:
        return _download(minio, job.bucket, key)

    manifest = SeriesManifest.model_validate_json(get(job.key))
    blobs = [get(i.key) for i in manifest.instances]
    slide = DicomSlide([BytesSource(b) for b in blobs], ReadLimits())
    plan = plan_tiles(slide, served.spec, min_tissue=settings.ingest_min_tissue_fraction)
    n = plan.n_tiles if max_tiles is None else min(plan.n_tiles, max_tiles)
    out = [grpcclient.InferRequestedOutput(names.TENSOR_TILE_EMBEDDING)]
    for i in range(n):
        tile = read_tiles(slide, plan, i, i + 1)
        inp = grpcclient.InferInput(names.TENSOR_TILES, list(tile.shape), "UINT8")
        inp.set_data_from_numpy(tile)
        client.infer(names.MODEL_PATCH_EMBED, [inp], outputs=out)
    seconds = time.perf_counter() - t0
    client.close()
    return {"n_tiles": n, "seconds": seconds, "bytes_read": sum(len(b) for b in blobs)}


def read_only_paths(settings: Any, job: Any, served: Any) -> dict:
    """Without Triton: ranged reads + decode + tiling vs download-all + decode + tiling."""
    from histoprompt.core.s3 import make_minio
    from histoprompt.core.schemas import SeriesManifest
    from histoprompt.wsi.dicom import DicomSlide, ReadLimits
    from histoprompt.wsi.ranged import BytesSource
    from histoprompt.wsi.read_ahead import ReadAhead
    from histoprompt.wsi.scoring import READ_AHEAD_BATCHES
    from histoprompt.wsi.sources import open_slide
    from histoprompt.wsi.tiling import plan_tiles, read_tiles

    minio = make_minio(settings)
    batch = settings.ingest_batch_size
    t0 = time.perf_counter()
    opened = open_slide(minio, job, settings.read_limits())
    plan = plan_tiles(opened.reader, served.spec, min_tissue=settings.ingest_min_tissue_fraction)
    ahead = ReadAhead(READ_AHEAD_BATCHES * batch)  # as the ingest path reads
    for i in range(0, plan.n_tiles, batch):
        ahead.read(opened.reader, plan, i, min(i + batch, plan.n_tiles))
    ranged = plan.n_tiles / (time.perf_counter() - t0)
    opened.close()

    def get(key: str) -> bytes:
        return _download(minio, job.bucket, key)

    t0 = time.perf_counter()
    manifest = SeriesManifest.model_validate_json(get(job.key))
    slide = DicomSlide([BytesSource(get(i.key)) for i in manifest.instances], ReadLimits())
    plan = plan_tiles(slide, served.spec, min_tissue=settings.ingest_min_tissue_fraction)
    for i in range(plan.n_tiles):
        read_tiles(slide, plan, i, i + 1)
    naive = plan.n_tiles / (time.perf_counter() - t0)
    return {"ranged_tiles_per_s": ranged, "download_tiles_per_s": naive}


def upload_dicom(
    settings: Any, work: Path, name: str, size: int, levels: int, mpp: float, tile_fn: Any = None
) -> Any:
    from histoprompt.core.s3 import make_minio
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series
    from histoprompt.ingest.events import SlideJob
    from histoprompt.stack.feed import upload_series

    t0 = time.perf_counter()
    paths = write_dicom_series(
        work / name,
        DicomSeriesSpec(width=size, height=size, levels=levels, tile=256, mpp=mpp),
        tile_fn,
    )
    up = upload_series(make_minio(settings), settings.slides_bucket, f"bench/{name}", paths)
    for p in paths:
        p.unlink()
    print(f"  wrote+uploaded {name} ({size}^2 px) in {time.perf_counter() - t0:.0f} s", flush=True)
    return SlideJob(up.bucket, up.key, up.etag, up.size, "series")


def silence_bucket(handle: Any) -> None:
    """The benchmark publishes the slides' events itself (and times them from there), so on
    MinIO its stack's slides bucket sends no notifications: each slide has one event."""
    from histoprompt.core.s3 import make_minio

    settings = ingest_settings(handle.env_file)
    make_minio(settings).delete_bucket_notification(settings.slides_bucket)


# -- the four benchmarks ----------------------------------------------------------------------


def bench_data_path(handle: Any, work: Path, batches: tuple[int, int]) -> dict:
    served, _ = serve_encoder("null", handle.triton_grpc, handle.model_repository, work)
    settings = ingest_settings(
        handle.env_file, ingest_batch_size=batches[0], ingest_max_inflight=batches[1]
    )
    job = upload_dicom(settings, work, "datapath", 8192, 3, 0.5)
    ingest_path(settings, job, served, max_tiles=64)  # warm-up (Triton instances, caches)
    fast = cpu_run(
        stack_groups(handle), lambda: ingest_passes(settings, job, served, DATA_PATH_PASSES)
    )
    naive = naive_path(settings, job, served)
    assert fast["n_tiles"] == DATA_PATH_PASSES * naive["n_tiles"]
    reading = read_only_paths(settings, job, served)
    r_fast = fast["n_tiles"] / fast["seconds"]
    r_naive = naive["n_tiles"] / naive["seconds"]
    return {
        "slide": "8192^2 px, 3-level JPEG DICOM-WSI series, null encoder (224 px @ 0.5 mpp)",
        "batches": f"{batches[0]} tiles per request, {batches[1]} in flight",
        "n_tiles": naive["n_tiles"],
        "passes": DATA_PATH_PASSES,
        "ingest_tiles_per_s": r_fast,
        "naive_tiles_per_s": r_naive,
        "speedup": r_fast / r_naive,
        "ingest_gets": fast["gets"],
        "ingest_mb_read": fast["bytes_read"] / 1e6,
        "naive_mb_read": naive["bytes_read"] / 1e6,
        "read_only_ranged_tiles_per_s": reading["ranged_tiles_per_s"],
        "read_only_download_tiles_per_s": reading["download_tiles_per_s"],
        "triton_patch_embed_only_tiles_per_s": triton_only_rate(settings, served),
        "cpu": fast["cpu"],
    }


def bench_sparse(handle: Any, work: Path) -> dict:
    from histoprompt.export.synthetic_tiles import needle_biopsy

    served, _ = serve_encoder("null", handle.triton_grpc, handle.model_repository, work)
    settings = ingest_settings(handle.env_file)
    size = 16384
    job = upload_dicom(settings, work, "needle", size, 3, 0.5, needle_biopsy(size, size))
    return sparse_bytes(settings, job, served)


def triton_only_rate(settings: Any, served: Any, batch: int = 16, seconds: float = 5.0) -> float:
    """The serving ceiling: patch_embed tiles/s on random tiles, no reading at all."""
    import tritonclient.grpc as grpcclient

    from histoprompt.core import names

    px = int(served.spec.tile_px)
    x = np.random.default_rng(0).integers(0, 256, (batch, px, px, 3), dtype=np.uint8)
    client = grpcclient.InferenceServerClient(settings.triton_url)
    inp = grpcclient.InferInput(names.TENSOR_TILES, list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    client.infer(names.MODEL_PATCH_EMBED, [inp])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        client.infer(names.MODEL_PATCH_EMBED, [inp])
        n += batch
    client.close()
    return n / (time.perf_counter() - t0)


def bench_efficiency(handle: Any, work: Path, n_tiles: int) -> dict:
    from histoprompt.serving.onnx_runner import OnnxRunner
    from histoprompt.serving.preprocess import preprocess_tiles
    from histoprompt.wsi.dicom import DicomSlide
    from histoprompt.wsi.sources import open_slide
    from histoprompt.wsi.tiling import plan_tiles, read_tiles

    served, onnx_path = serve_encoder(
        "vit_small", handle.triton_grpc, handle.model_repository, work
    )
    settings = ingest_settings(handle.env_file, ingest_batch_size=32, ingest_max_inflight=2)
    job = upload_dicom(settings, work, "efficiency", 4096, 2, 0.5)
    from histoprompt.core.s3 import make_minio

    opened = open_slide(make_minio(settings), job, settings.read_limits())
    assert isinstance(opened.reader, DicomSlide)
    plan = plan_tiles(opened.reader, served.spec, min_tissue=0.25)
    n = min(n_tiles, plan.n_tiles)
    tiles = read_tiles(opened.reader, plan, 0, n)
    opened.close()
    # The encoder as the stub serves it: the same session options (pool threads that do not
    # spin-wait), so the ratio measures the pipeline, not a difference of ONNX Runtime set-up.
    sess = OnnxRunner(onnx_path)
    sess.run(preprocess_tiles(tiles[:4], served.spec))

    def ort_rate() -> float:
        t0 = time.perf_counter()
        for s in range(0, n, 32):
            sess.run(preprocess_tiles(tiles[s : s + 32], served.spec))
        return n / (time.perf_counter() - t0)

    # The machine is shared: bracket the ingest run with two ORT runs and take the faster
    # (the encoder-only limit), so noise cannot flatter the ratio.
    ort_before = ort_rate()
    ingest_path(settings, job, served, max_tiles=32)  # warm-up
    got = cpu_run(
        stack_groups(handle),
        lambda: ingest_path(settings, job, served, max_tiles=n),
        repeats=1,
    )
    rate = got["n_tiles"] / got["seconds"]
    ort_after = ort_rate()
    ort_best = max(ort_before, ort_after)
    return {
        "encoder": "vit_small (random weights, 224 px)",
        "n_tiles": n,
        "ort_inprocess_tiles_per_s": ort_best,
        "ort_before_after": [ort_before, ort_after],
        "ingest_tiles_per_s": rate,
        "efficiency": rate / ort_best,
        "cpu": got["cpu"],
    }


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over exec from the
    parent, so a child would report the (bigger) benchmark driver's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_child(env_file: str, bucket: str, key: str, etag: str) -> None:
    """Runs in a child process: the ingest data path on one slide; prints peak RSS."""
    import tritonclient.grpc as grpcclient

    from histoprompt.core import names
    from histoprompt.ingest.events import SlideJob
    from histoprompt.wsi.triton import served_model_from_config

    settings = ingest_settings(Path(env_file))
    c = grpcclient.InferenceServerClient(settings.triton_url)
    served = served_model_from_config(
        c.get_model_config(names.MODEL_TILE_PREPROCESS, as_json=True),
        {},
        c.get_model_config(names.MODEL_PATCH_EMBED, as_json=True),
    )
    c.close()
    out = ingest_path(settings, SlideJob(bucket, key, etag, 0, "series"), served)
    out["peak_rss_mb"] = peak_rss_mb()
    print("RSS " + json.dumps(out), flush=True)


def bench_memory(handle: Any, work: Path, sizes: list[int]) -> dict:
    serve_encoder("null", handle.triton_grpc, handle.model_repository, work)
    settings = ingest_settings(handle.env_file)
    out: dict[str, Any] = {}
    for size in sizes:
        job = upload_dicom(settings, work, f"rss{size}", size, 4, 0.5)
        proc = subprocess.run(  # noqa: S603 - our interpreter, our module
            [
                sys.executable,
                "-m",
                "tests.perf.bench_ingest",
                "--rss-child",
                str(handle.env_file),
                job.bucket,
                job.key,
                job.etag,
            ],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=True,
        )
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RSS "))
        res = json.loads(line[4:])
        out[f"{size}"] = {
            "peak_rss_mb": res["peak_rss_mb"],
            "n_tiles": res["n_tiles"],
            "seconds": res["seconds"],
            "tiles_per_s": res["n_tiles"] / res["seconds"],
        }
        print(f"  {size}^2: {out[f'{size}']}", flush=True)
    keys = [str(s) for s in sizes]
    out["ratio_largest_to_smallest"] = out[keys[-1]]["peak_rss_mb"] / out[keys[0]]["peak_rss_mb"]
    return out


def bench_latency(handle: Any, work: Path, n_slides: int = 20, workers: int = 2) -> dict:
    from histoprompt.core import names
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
    from histoprompt.stack.ingest_demo import load_demo_model

    load_demo_model(handle.triton_grpc, handle.model_repository, work / "demo")
    settings = ingest_settings(handle.env_file)
    group = f"bench-latency-{uuid.uuid4().hex[:6]}"
    skip_group_to_end(settings, group)
    minio = make_minio(settings)
    paths = write_dicom_series(
        work / "lat", DicomSeriesSpec(width=2048, height=2048, levels=3, tile=256)
    )
    ups = [
        upload_series(minio, settings.slides_bucket, f"bench/lat/{uuid.uuid4().hex[:8]}", paths)
        for _ in range(n_slides)
    ]
    env = dict(
        os.environ,
        HISTOPROMPT_ENV_FILE=str(handle.env_file),
        HISTOPROMPT_INGEST_GROUP_ID=group,
        HISTOPROMPT_INGEST_METRICS_PORT="0",
    )
    procs = [
        subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "histoprompt.ingest", "run", "--log-level", "WARNING"],
            env=env,
            cwd=REPO_ROOT,
        )
        for _ in range(workers)
    ]
    watcher = TopicWatcher(settings, names.TOPIC_RESULTS)
    producer = make_producer(settings)
    try:
        time.sleep(15)  # both consumers join the group and split the partitions
        sent: dict[str, float] = {}
        for up in ups:
            sent[up.slide_id] = time.time()
            publish_upload(producer, up, with_members=False)
        ids = set(sent)
        got: dict[str, float] = {}
        deadline = time.monotonic() + 900
        while ids - set(got) and time.monotonic() < deadline:
            for _, value in watcher.poll(0.5):
                ev = results_of([(None, value)])[0]
                if ev.slide_id in ids and ev.slide_id not in got:
                    got[ev.slide_id] = time.time()
        lat = np.array([got[s] - sent[s] for s in got])
        return {
            "slides": n_slides,
            "workers": workers,
            "completed": len(got),
            "tiles_per_slide": "tiny encoder (64 px @ 1.0 mpp), 2048^2 px slide",
            "p50_s": float(np.percentile(lat, 50)),
            "p95_s": float(np.percentile(lat, 95)),
            "makespan_s": float(max(got.values()) - min(sent.values())),
        }
    finally:
        producer.close()
        watcher.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


# -- report -----------------------------------------------------------------------------------


def report_lines(r: dict, notes: list[str] | None = None) -> list[str]:
    """The section's body for the numbers in `r` (what was measured, and what failed)."""
    s3 = {"minio": "MinIO", "seaweed": "SeaweedFS"}[r.get("s3_server", "seaweed")]
    lines = [
        "Measured in one run on this machine (CPU, 2 cores shared with the "
        f"local stack (Kafka, {s3}, Triton, Prometheus) and any other load). SYNTHETIC "
        "slides; encoders UNTRAINED or random (speed only). The S3 server runs on the same "
        "cores and its CPU is counted; in production S3 is usually remote object storage, "
        "off the GPU node.",
        "",
    ]
    if "data_path" in r:
        d = r["data_path"]
        passes = int(d.get("passes", 1))
        lines += cpu_lines(
            f"Data path ({d['slide']}; {d['batches']}), CPU cost",
            d["cpu"],
            d["n_tiles"] * passes,
            passes,
        ) + [
            f"Target <= 1.0 CPU-ms per tile. {_data_path_table(d)}",
            "",
        ]
        lines += history_lines(load_history())
    if "sparse" in r:
        lines += sparse_lines(r["sparse"])
    if "efficiency" in r:
        e = r["efficiency"]
        lines += [
            f"**Pipeline efficiency** ({e['encoder']}, {e['n_tiles']} tiles): ingest "
            f"{e['ingest_tiles_per_s']:.2f} tiles/s vs in-process ONNX Runtime encoder-only, "
            "with the stub's session options, "
            f"{e['ort_inprocess_tiles_per_s']:.2f} tiles/s = **{e['efficiency']:.3f}** "
            "(target >= 0.85).",
            "",
        ]
        if "cpu" in e:
            lines += cpu_lines("Encoder-included path (ViT-S), CPU cost", e["cpu"], e["n_tiles"])
    if "memory" in r:
        m = r["memory"]
        rows = [k for k in m if k.isdigit()]
        lines += [
            "**Peak RSS** of the ingest data-path process (null encoder):",
            "",
            "| slide | tiles | peak RSS MB | tiles/s |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {k}^2 px | {m[k]['n_tiles']} | {m[k]['peak_rss_mb']:.0f} | "
            f"{m[k]['tiles_per_s']:.1f} |"
            for k in rows
        ]
        lines += [
            "",
            f"Largest/smallest = **{m['ratio_largest_to_smallest']:.2f}** "
            "(targets: <= 1500 MB, ratio <= 1.2).",
            "",
        ]
    if "latency" in r:
        la = r["latency"]
        lines += [
            f"**Latency** event -> result event, {la['slides']} slides, {la['workers']} "
            f"workers ({la['tiles_per_slide']}): p50 **{la['p50_s']:.1f} s**, p95 "
            f"**{la['p95_s']:.1f} s**, makespan {la['makespan_s']:.1f} s, completed "
            f"{la['completed']}/{la['slides']}.",
            "",
        ]
    for k, v in r.get("errors", {}).items():
        lines += [f"- {k}: not measured ({v})"]
    lines += ["", "Run by `make bench` (tests/perf/bench_ingest.py)."]
    if notes:
        lines += ["", *notes]
    return lines


def _data_path_table(d: dict) -> str:
    """The wall-clock rows of the data path (noisy on a shared machine), the naive-baseline
    ratio among them: it mostly measures batching (one gRPC call per tile), so it is a row,
    not a headline."""
    rows = [
        ("ingest path (ranged reads, batched gRPC)", f"{d['ingest_tiles_per_s']:.1f} tiles/s"),
        ("naive: download whole, one gRPC call per tile", f"{d['naive_tiles_per_s']:.1f} tiles/s"),
        ("ingest / naive", f"{d['speedup']:.2f}x"),
        (
            "read only, no Triton: ranged reads + decode + tiling",
            f"{d['read_only_ranged_tiles_per_s']:.1f} tiles/s",
        ),
        (
            "read only, no Triton: whole download + decode + tiling",
            f"{d['read_only_download_tiles_per_s']:.1f} tiles/s",
        ),
        (
            "read only: ranged / download",
            f"{d['read_only_ranged_tiles_per_s'] / d['read_only_download_tiles_per_s']:.2f}x",
        ),
        (
            "Triton patch_embed alone (random tiles, no reading)",
            f"{d['triton_patch_embed_only_tiles_per_s']:.1f} tiles/s",
        ),
        ("ingest bytes / GETs", f"{d['ingest_mb_read']:.2f} MB in {d['ingest_gets']} GETs"),
        ("naive bytes (whole objects)", f"{d['naive_mb_read']:.2f} MB"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return "Wall-clock rows (noisy on shared cores):\n\n| measure | value |\n|---|---:|\n" + table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="data_path,sparse,efficiency,memory,latency")
    parser.add_argument("--efficiency-tiles", type=int, default=128)
    parser.add_argument("--rss-sizes", default="10000,50000")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers")
    parser.add_argument("--rss-child", nargs=4, metavar=("ENV", "BUCKET", "KEY", "ETAG"))
    parser.add_argument(
        "--history",
        metavar="LABEL",
        help="record the data path's CPU figure as the history row of change LABEL",
    )
    parser.add_argument(
        "--batches",
        default="x".join(map(str, DATA_PATH_BATCHES)),
        metavar="TILESxINFLIGHT",
        help="the data path's tiles per patch_embed request and requests in flight",
    )
    parser.add_argument(
        "--s3-server",
        choices=("minio", "seaweed"),
        default="minio",
        help="the local stack's S3 server, on this host (its CPU is counted in the data "
        "path's figure); minio: the stack's default, and it spent about half of seaweed's "
        "CPU here (history table)",
    )
    args = parser.parse_args()
    tiles, inflight = (int(v) for v in args.batches.split("x"))
    from histoprompt.core.allocator import tune_malloc

    tune_malloc()  # this process stands in for the ingest process, which tunes it at start
    if args.rss_child:
        _rss_child(*args.rss_child)
        return

    from histoprompt.ingest.logs import configure
    from histoprompt.stack import StackSettings, down, up

    configure("WARNING")
    wanted = args.only.split(",")
    results: dict[str, Any] = {"errors": {}, "s3_server": args.s3_server}
    with tempfile.TemporaryDirectory(prefix="hp-bench-ingest-") as tmp:
        state = Path(tmp) / "stack"
        handle = up(
            StackSettings(
                stack_state_dir=state,
                stack_env_file=state / "stack.env",
                stack_die_with_parent=True,
                stack_kafka_libs=REPO_ROOT / ".cache" / "kafka" / "libs",
                stack_s3_server=args.s3_server,
            )
        )
        if args.s3_server == "minio":
            silence_bucket(handle)
        work = Path(tmp) / "work"
        work.mkdir()
        runs = {
            "data_path": lambda: bench_data_path(handle, work, (tiles, inflight)),
            "sparse": lambda: bench_sparse(handle, work),
            "efficiency": lambda: bench_efficiency(handle, work, args.efficiency_tiles),
            "memory": lambda: bench_memory(
                handle, work, [int(s) for s in args.rss_sizes.split(",")]
            ),
            "latency": lambda: bench_latency(handle, work),
        }
        try:
            for name in wanted:
                print(f"[bench_ingest] {name} ...", flush=True)
                try:
                    results[name] = runs[name]()
                    print(json.dumps(results[name], indent=1), flush=True)
                except Exception as err:  # report what failed, keep the other numbers
                    results["errors"][name] = f"{type(err).__name__}: {err}"
                    print(f"[bench_ingest] {name} failed: {err!r}", flush=True)
        finally:
            down(state)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.history and "data_path" in results:
        append_history(args.history, results["data_path"])
    from tests.perf._report import write_section

    write_section(TITLE, report_lines(results), path=args.out)


if __name__ == "__main__":
    main()
