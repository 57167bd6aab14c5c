"""`histoprompt-export reference`: build and inspect RNA reference databases.

Example:

    histoprompt-export reference build --expression expr.parquet --metadata meta.csv \\
        --rna-onnx bundle/rna_embed.onnx --name tcga-demo --out s3://histoprompt-models

The embeddings come from the `rna_embed` model, run locally with ONNX Runtime
(`--rna-onnx`) or through Triton (`--triton host:port`); both take EXPRESSION fp32 [-1, G]
in the gene contract's order and return RNA_EMBEDDING fp32 [-1, E].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from histoprompt.export.cli_errors import exit_on_error, fail

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from histoprompt.core.reference import EmbedFn, ReferenceDB

app = typer.Typer(
    name="reference",
    help="Build and inspect RNA reference databases (Soft-kNN / prototype prompting).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

CONTRACT_FILE = "gene_contract.json"
TRITON_MAX_BATCH = 64


def read_genes(path: Path) -> list[str]:
    """Gene order from a gene_contract.json (`genes`), a JSON list, or one symbol per line."""
    text = path.read_text()
    if path.suffix == ".json":
        doc = json.loads(text)
        genes = doc["genes"] if isinstance(doc, dict) else doc
        return [str(g) for g in genes]
    return [line.strip() for line in text.splitlines() if line.strip()]


def onnx_embed_fn(path: Path, threads: int = 0) -> EmbedFn:
    """ONNX Runtime on the exported `rna_embed` model (EXPRESSION -> RNA_EMBEDDING)."""
    import onnxruntime as ort

    from histoprompt.core import names

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def embed(x: np.ndarray) -> np.ndarray:
        out = session.run([names.TENSOR_RNA_EMBEDDING], {names.TENSOR_EXPRESSION: x})[0]
        return out  # type: ignore[no-any-return]

    return embed


def triton_embed_fn(url: str, model: str = "rna_embed") -> EmbedFn:
    """Triton gRPC `rna_embed`, in batches of at most its max_batch_size."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    from histoprompt.core import names

    client = grpcclient.InferenceServerClient(url)

    def embed(x: np.ndarray) -> np.ndarray:
        parts = []
        for lo in range(0, x.shape[0], TRITON_MAX_BATCH):
            batch = np.ascontiguousarray(x[lo : lo + TRITON_MAX_BATCH], dtype=np.float32)
            inp = grpcclient.InferInput(names.TENSOR_EXPRESSION, list(batch.shape), "FP32")
            inp.set_data_from_numpy(batch)
            res = client.infer(
                model, [inp], outputs=[grpcclient.InferRequestedOutput(names.TENSOR_RNA_EMBEDDING)]
            )
            parts.append(res.as_numpy(names.TENSOR_RNA_EMBEDDING))
        return np.concatenate(parts, axis=0)

    return embed


def _store(ref: ReferenceDB, out: str) -> str:
    """Save under a local directory or `s3://<bucket>[/<root>]`; returns where it went."""
    from histoprompt.core.reference_store import save_reference, save_reference_s3

    if not out.startswith("s3://"):
        return str(save_reference(ref, Path(out)))
    from histoprompt.core.s3 import make_minio, parse_s3_uri
    from histoprompt.core.settings import ConnectionSettings

    bucket, root = parse_s3_uri(out)
    client = make_minio(ConnectionSettings.load())
    return save_reference_s3(ref, client, bucket, root or "references")


def _embedder(
    rna_onnx: Path | None,
    triton: str | None,
    triton_model: str,
    rna_head: Path | None,
    rna_embeddings: Path | None,
    expr: pd.DataFrame,
) -> tuple[EmbedFn | None, np.ndarray | None]:
    """(embed function, None), or (None, aligned embeddings of the expression rows)."""
    from histoprompt.core.reference import ReferenceDbError
    from histoprompt.export.errors import TrainingError

    if rna_head is not None and rna_embeddings is not None:
        from histoprompt.export.rna_table import onnx_head_fn, read_rna_embeddings, rows_for

        try:
            table = read_rna_embeddings(rna_embeddings)
            raw = rows_for(table, [str(i) for i in expr.index], str(rna_embeddings))
        except TrainingError as err:
            raise ReferenceDbError(str(err)) from err
        return None, onnx_head_fn(rna_head)(raw)
    if rna_onnx is not None:
        return onnx_embed_fn(rna_onnx), None
    assert triton is not None
    return triton_embed_fn(triton, triton_model), None


def _check_options(
    rna_onnx: Path | None,
    triton: str | None,
    rna_embeddings: Path | None,
    rna_head: Path | None,
    genes: Path | None,
    expression_dtype: str,
) -> Path | None:
    """The gene-order file to use (None: the expression's own columns, precomputed path)."""
    if (rna_embeddings is None) != (rna_head is None):
        raise fail("--rna-embeddings and --rna-head go together")
    # --rna-onnx wins over a Triton URL that may come from the environment
    if rna_onnx is None and triton is None and rna_head is None:
        raise fail("give --rna-onnx FILE, --triton HOST:PORT or --rna-embeddings/--rna-head")
    if expression_dtype not in ("float16", "float32"):
        raise fail("--expression-dtype must be float16 or float32")
    gene_file = genes or (rna_onnx.parent / CONTRACT_FILE if rna_onnx is not None else None)
    if rna_head is None and (gene_file is None or not gene_file.is_file()):
        raise fail(f"the encoder's gene order is needed: --genes FILE ({gene_file} does not exist)")
    return gene_file


@app.command("build")
def build(
    expression: Annotated[
        Path, typer.Option(help="samples x genes log1p(TPM): parquet, csv or h5ad")
    ],
    out: Annotated[str, typer.Option(help="local directory, or s3://<bucket>[/<root>]")],
    metadata: Annotated[
        Path | None, typer.Option(help="per-sample table keyed by sample_id (cancer_type, cohort)")
    ] = None,
    rna_onnx: Annotated[
        Path | None, typer.Option("--rna-onnx", help="rna_embed ONNX file (ONNX Runtime)")
    ] = None,
    triton: Annotated[
        str | None,
        typer.Option(
            help="Triton gRPC host:port serving rna_embed", envvar="HISTOPROMPT_TRITON_URL"
        ),
    ] = None,
    triton_model: Annotated[str, typer.Option(help="Triton model to call")] = "rna_embed",
    rna_embeddings: Annotated[
        Path | None,
        typer.Option(
            help="precomputed RNA embeddings table (sample_id -> vector), with --rna-head"
        ),
    ] = None,
    rna_head: Annotated[
        Path | None, typer.Option(help="the bundle's rna_head.onnx (for --rna-embeddings)")
    ] = None,
    genes: Annotated[
        Path | None,
        typer.Option(help="encoder gene order (gene_contract.json or .txt); default: next to ONNX"),
    ] = None,
    name: Annotated[str, typer.Option(help="reference name")] = "reference",
    encoder: Annotated[str, typer.Option(help="model version that made the embeddings")] = "",
    expression_dtype: Annotated[
        str, typer.Option(help="float16 halves the size; float32 keeps it exact")
    ] = "float32",
    reorder: Annotated[
        bool,
        typer.Option(help="permute columns when the genes match the encoder but not its order"),
    ] = False,
    synthetic: Annotated[bool, typer.Option(help="label the reference as SYNTHETIC")] = False,
) -> None:
    """Embed a reference cohort, score the Hallmarks and store a versioned reference DB."""
    from histoprompt.core.reference_build import build_reference, read_table

    gene_file = _check_options(rna_onnx, triton, rna_embeddings, rna_head, genes, expression_dtype)
    dtype: Literal["float16", "float32"] = "float16" if expression_dtype == "float16" else "float32"
    with exit_on_error():
        expr = read_table(expression)
        meta = read_table(metadata).reset_index() if metadata is not None else None
        embed_fn, precomputed = _embedder(
            rna_onnx, triton, triton_model, rna_head, rna_embeddings, expr
        )
        encoder_genes = read_genes(gene_file) if gene_file else [str(c) for c in expr.columns]
        ref = build_reference(
            expr,
            meta,
            embed_fn,
            encoder_genes,
            name=name,
            encoder=encoder,
            expression_dtype=dtype,
            reorder=reorder,
            synthetic=synthetic,
            embeddings=precomputed,
        )
        where = _store(ref, out)
    m = ref.manifest
    typer.echo(
        f"reference {m.name} version {m.version}: {m.n_samples} samples x {m.n_genes} genes, "
        f"E={m.embed_dim}, {len(m.hallmark_sets)} Hallmark sets scored"
        f"{', SYNTHETIC' if m.synthetic else ''}"
    )
    typer.echo(where)


@app.command("show")
def show(
    uri: Annotated[str, typer.Argument(help="local reference dir or s3://bucket/references/name")],
) -> None:
    """Print a reference's manifest (sizes, version, skipped Hallmark sets)."""
    from histoprompt.core.reference_store import load_reference_uri

    client = None
    if uri.startswith("s3://"):
        from histoprompt.core.s3 import make_minio
        from histoprompt.core.settings import ConnectionSettings

        client = make_minio(ConnectionSettings.load())
    with exit_on_error():
        ref = load_reference_uri(uri, client)
    typer.echo(ref.manifest.model_dump_json(by_alias=True, indent=1, exclude={"files"}))
