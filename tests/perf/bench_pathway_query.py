"""Benchmark: pathway_query latency through Triton with a 10k-sample reference (SYNTHETIC).

Not a test. Run: `uv run --frozen python tests/perf/bench_pathway_query.py [--write]`.

Starts SeaweedFS S3 and Triton (histoprompt.stack) in a temporary directory, builds a
SYNTHETIC 10k-sample reference (all Hallmark genes, the aligned width from the checked-in
pathway_query config, an UNTRAINED linear RNA encoder), uploads it to S3, loads the
checked-in `pathway_query` model with `reference_uri` pointing there, and times gRPC
requests (one slide embedding each) client-side for three cases:

* a Hallmark set (precomputed scores),
* a new gene set on its first query (cold: ssGSEA over the 10k reference samples),
* the same new set again (LRU hit).

`--write` puts the results into BENCHMARKS.md (section "Molecular prompting: pathway_query").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Molecular prompting: pathway_query latency"


def _slide_dim(config: str) -> int:
    block = config[config.index('"SLIDE_EMBEDDING"') :]
    dims = re.search(r"dims:\s*\[([^\]]*)\]", block)
    assert dims is not None
    return int(dims.group(1).split(",")[-1])


def _set_param(config: str, key: str, value: str) -> str:
    pattern = rf'(key:\s*"{key}"\s*value:\s*\{{\s*string_value:\s*)"[^"]*"'
    return re.sub(pattern, rf'\1"{value}"', config)


def percentiles(ms: list[float]) -> tuple[float, float, float]:
    a = np.asarray(ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def write_section(text: str) -> Path:
    path = ROOT / "BENCHMARKS.md"
    body = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION in body:
        start = body.index(SECTION)
        nxt = body.find("\n## ", start + len(SECTION))
        body = body[:start] + text + (body[nxt + 1 :] if nxt != -1 else "")
    else:
        body = body.rstrip("\n") + "\n\n" + text
    path.write_text(body.rstrip("\n") + "\n")
    return path


def main() -> None:  # noqa: PLR0915 - one linear script
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=300, help="per warm case")
    ap.add_argument("--cold", type=int, default=100, help="distinct new gene sets")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()

    import tritonclient.grpc as grpcclient

    from histoprompt.core import names
    from histoprompt.core.pathway_engine import PathwayEngine
    from histoprompt.core.reference import (
        build_reference,
        linear_embed_fn,
        save_reference_s3,
        synthetic_reference_inputs,
    )
    from histoprompt.core.s3 import make_minio
    from histoprompt.stack import StackSettings, down, up

    src = ROOT / "model_repository" / names.MODEL_PATHWAY_QUERY
    config = (src / "config.pbtxt").read_text()
    dim = _slide_dim(config)
    t = time.perf_counter()
    inputs = synthetic_reference_inputs(args.samples, seed=0)
    genes = list(inputs.expression.columns)
    ref = build_reference(
        inputs.expression,
        inputs.metadata,
        linear_embed_fn(len(genes), dim),
        genes,
        name="bench-synthetic-10k",
        synthetic=True,
    )
    build_s = time.perf_counter() - t
    print(f"reference {ref.n_samples} x {len(ref.genes)}, E={dim}, built in {build_s:.1f} s")

    state = Path(tempfile.mkdtemp(prefix="hp-bench-"))
    settings = StackSettings(
        stack_state_dir=state,
        stack_env_file=state / "stack.env",
        stack_services=("seaweed", "triton"),
        stack_die_with_parent=True,
    )
    handle = up(settings)
    try:
        bucket = handle.settings.models_bucket
        t = time.perf_counter()
        save_reference_s3(ref, make_minio(handle.settings), bucket)
        upload_s = time.perf_counter() - t
        target = handle.model_repository / names.MODEL_PATHWAY_QUERY
        shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        uri = f"s3://{bucket}/references/{ref.name}"
        (target / "config.pbtxt").write_text(_set_param(config, "reference_uri", uri))
        # Triton gets no HISTOPROMPT_* env from the local stack; its cwd's stack.env is
        # what ConnectionSettings reads (see tests/integration/test_pathway_query.py).
        if (state / "triton").is_dir():
            shutil.copyfile(handle.env_file, state / "triton" / "stack.env")
        client = grpcclient.InferenceServerClient(handle.triton_grpc)
        t = time.perf_counter()
        client.load_model(names.MODEL_PATHWAY_QUERY)
        load_s = time.perf_counter() - t

        rng = np.random.default_rng(0)
        emb = ref.embeddings[:1] + 0.05 * rng.normal(size=(1, dim)).astype(np.float32)

        def call(sets: list[str]) -> float:
            e = grpcclient.InferInput(names.TENSOR_SLIDE_EMBEDDING, [1, dim], "FP32")
            e.set_data_from_numpy(emb.astype(np.float32))
            g = grpcclient.InferInput(names.TENSOR_GENE_SETS, [len(sets)], "BYTES")
            g.set_data_from_numpy(np.array([s.encode() for s in sets], dtype=np.object_))
            start = time.perf_counter()
            res = client.infer(names.MODEL_PATHWAY_QUERY, [e, g])
            ms = (time.perf_counter() - start) * 1e3
            assert np.isfinite(res.as_numpy(names.TENSOR_SCORES)).all()
            return ms

        def new_set(i: int) -> str:
            pick = rng.choice(len(genes), size=50, replace=False)
            return json.dumps({"name": f"bench_new_{i}", "genes": [genes[j] for j in pick]})

        for _ in range(20):  # warm the gRPC channel and the model instance
            call(["HALLMARK_HYPOXIA"])
        hallmark = [call(["HALLMARK_HYPOXIA"]) for _ in range(args.requests)]
        cold = [call([new_set(i)]) for i in range(args.cold)]
        repeat = new_set(10**6)
        call([repeat])
        cached = [call([repeat]) for _ in range(args.requests)]
        client.close()

        engine = PathwayEngine.for_reference(ref)
        t = time.perf_counter()
        for i in range(20):
            engine.query(emb, [new_set(2 * 10**6 + i)])
        cold_inproc = (time.perf_counter() - t) / 20 * 1e3
    finally:
        down(state)
        shutil.rmtree(state, ignore_errors=True)

    rows = []
    for label, ms, target_ms in (
        ("Hallmark set (precomputed)", hallmark, 20.0),
        ("new gene set, first query (cold)", cold, 200.0),
        ("same new set again (cached)", cached, 20.0),
    ):
        p50, p99, mx = percentiles(ms)
        verdict = "meets" if p99 <= target_ms else "MISSES"
        rows.append(
            f"| {label} | {len(ms)} | {p50:.2f} | {p99:.2f} | {mx:.2f} | "
            f"<= {target_ms:.0f} ms: {verdict} |"
        )
    lines = [
        SECTION,
        "",
        f"SYNTHETIC reference: {ref.n_samples} samples x {len(ref.genes)} genes (all Hallmark "
        f"genes), aligned width E={dim}, UNTRAINED linear RNA encoder. Built in {build_s:.1f} s, "
        f"uploaded to SeaweedFS S3 in {upload_s:.1f} s; `load_model(pathway_query)` (reads the "
        f"reference from S3 and ranks its expression) took {load_s:.1f} s. Triton "
        f"(pytriton wheel, python backend, CPU) on a shared {os.cpu_count()}-core box; one slide "
        "embedding and one gene set per gRPC request, sequential, client-side wall time; "
        "method soft_knn (k=32). New sets are 50 random reference genes as JSON.",
        "Run: `uv run --frozen python tests/perf/bench_pathway_query.py --write`.",
        "",
        "| case | requests | p50 ms | p99 ms | max ms | target (p99) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"For comparison, in-process (PathwayEngine.query, no Triton, no gRPC), the mean of 20 "
        f"cold new sets on the same reference was {cold_inproc:.1f} ms in the same run (the box "
        "is shared, so single numbers move by several ms).",
        "",
    ]
    print("\n".join(lines))
    if args.write:
        print(f"written: {write_section(chr(10).join(lines))}")


if __name__ == "__main__":
    main()
