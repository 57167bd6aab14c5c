"""Benchmark: pathway_query latency through Triton with a 10k-sample reference (SYNTHETIC).

Not a test. Run from the repository root:
`uv run --frozen python -m tests.perf.bench_pathway_query [--write]`.

Starts SeaweedFS S3 and Triton (histoprompt.stack) in a temporary directory, builds a
SYNTHETIC 10k-sample reference (all Hallmark genes, the aligned width from the checked-in
pathway_query config, an UNTRAINED linear RNA encoder), uploads it to S3, loads the
checked-in `pathway_query` model (as `pathway_query_bench_ref`, see
tests/helpers/prompting.py) with `reference_uri` pointing there, and times gRPC
requests (one slide embedding each) client-side for three cases:

* a Hallmark set (precomputed scores),
* a new gene set on its first query (cold: ssGSEA over the 10k reference samples),
* the same new set again (LRU hit).

`--write` puts the results into BENCHMARKS.md (section "Molecular prompting: pathway_query").
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

TITLE = "Molecular prompting: pathway_query latency"
MODEL = "pathway_query_bench_ref"


def percentiles(ms: list[float]) -> tuple[float, float, float]:
    a = np.asarray(ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


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
    from histoprompt.stack import StackSettings, down, up
    from tests.helpers.prompting import prepare_pathway_query
    from tests.perf._report import write_section

    state = Path(tempfile.mkdtemp(prefix="hp-bench-"))
    settings = StackSettings(
        stack_state_dir=state,
        stack_env_file=state / "stack.env",
        stack_services=("seaweed", "triton"),
        stack_die_with_parent=True,
    )
    handle = up(settings)
    try:
        prepared = prepare_pathway_query(
            handle.settings,
            handle.model_repository,
            model_name=MODEL,
            reference_name="bench-synthetic-10k",
            n_samples=args.samples,
            seed=0,
        )
        ref, dim = prepared.ref, prepared.embed_dim
        genes = list(ref.genes)
        build_s, upload_s = prepared.build_s, prepared.upload_s
        print(f"reference {ref.n_samples} x {len(ref.genes)}, E={dim}, built in {build_s:.1f} s")
        client = grpcclient.InferenceServerClient(handle.triton_grpc)
        t = time.perf_counter()
        client.load_model(MODEL)
        load_s = time.perf_counter() - t

        rng = np.random.default_rng(0)
        emb = ref.embeddings[:1] + 0.05 * rng.normal(size=(1, dim)).astype(np.float32)

        def call(sets: list[str]) -> float:
            e = grpcclient.InferInput(names.TENSOR_SLIDE_EMBEDDING, [1, dim], "FP32")
            e.set_data_from_numpy(emb.astype(np.float32))
            g = grpcclient.InferInput(names.TENSOR_GENE_SETS, [len(sets)], "BYTES")
            g.set_data_from_numpy(np.array([s.encode() for s in sets], dtype=np.object_))
            start = time.perf_counter()
            res = client.infer(MODEL, [e, g])
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
        f"SYNTHETIC reference: {ref.n_samples} samples x {len(ref.genes)} genes (all Hallmark "
        f"genes), aligned width E={dim}, UNTRAINED linear RNA encoder. Built in {build_s:.1f} s, "
        f"uploaded to SeaweedFS S3 in {upload_s:.1f} s; loading the checked-in pathway_query "
        f"(as `{MODEL}`; it reads the "
        f"reference from S3 and ranks its expression) took {load_s:.1f} s. Triton "
        "(pytriton wheel, python backend, CPU); one slide "
        "embedding and one gene set per gRPC request, sequential, client-side wall time; "
        "method soft_knn (k=32). New sets are 50 random reference genes as JSON.",
        "Run: `uv run --frozen python -m tests.perf.bench_pathway_query --write`.",
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
        write_section(TITLE, lines)


if __name__ == "__main__":
    main()
