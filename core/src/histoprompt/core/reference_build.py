"""Building a reference: read the input tables, check the gene order, embed, score Hallmark.

The version is the first 12 hex characters of a sha256 over the genes and every array
and table, so the same inputs always give the same version and any change gives a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from histoprompt.core.errors import NotFoundError
from histoprompt.core.genesets import (
    HALLMARK_COLLECTION,
    GeneIndex,
    GeneSetCollection,
    LowCoverageError,
    load_hallmark,
)
from histoprompt.core.reference import (
    REFERENCE_SCHEMA,
    SAMPLE_ID,
    EmbedFn,
    GeneOrderError,
    ReferenceDB,
    ReferenceDbError,
    ReferenceManifest,
)
from histoprompt.core.ssgsea import ssgsea

__all__ = ["build_reference", "check_gene_order", "read_table"]


def check_gene_order(
    genes: Sequence[str], encoder_genes: Sequence[str], *, reorder: bool = False
) -> NDArray[Any] | None:
    """Column order that maps `genes` onto `encoder_genes`; None when already identical.

    Missing or extra genes are always an error. A pure permutation is an error unless
    `reorder`, because a silently reordered matrix is the classic way to get plausible
    nonsense out of an encoder.
    """
    norm = [str(g).strip().upper() for g in genes]
    enc = [str(g).strip().upper() for g in encoder_genes]
    if norm == enc:
        return None
    have, want = set(norm), set(enc)
    missing, extra = [g for g in enc if g not in have], [g for g in norm if g not in want]
    if missing or extra or len(norm) != len(enc):
        raise GeneOrderError(
            f"expression genes do not match the RNA encoder's {len(enc)} genes: "
            f"{len(missing)} missing (e.g. {missing[:5]}), {len(extra)} extra "
            f"(e.g. {extra[:5]}), {len(norm)} given. Align the matrix to the encoder's "
            "gene contract first."
        )
    first = next(i for i, (a, b) in enumerate(zip(norm, enc, strict=True)) if a != b)
    if not reorder:
        raise GeneOrderError(
            f"expression has the encoder's genes in another order (first difference at "
            f"column {first}: {norm[first]!r}, encoder expects {enc[first]!r}); "
            "pass reorder=True (CLI: --reorder) to permute the columns"
        )
    pos = {g: i for i, g in enumerate(norm)}
    return np.array([pos[g] for g in enc], dtype=np.int64)


def read_table(path: Path) -> pd.DataFrame:
    """Samples x genes (or metadata) from parquet, CSV/TSV or AnnData h5ad.

    Parquet/CSV: a `sample_id` column, or the first column, becomes the index.
    """
    suffix = path.suffix.lower()
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    if suffix == ".h5ad":
        try:
            import anndata
        except ImportError as err:
            raise ReferenceDbError(
                "reading .h5ad needs anndata: pip install 'histoprompt-core[h5ad]'"
            ) from err
        adata = anndata.read_h5ad(path)
        matrix = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        frame = pd.DataFrame(matrix, index=adata.obs_names.astype(str), columns=adata.var_names)
        frame.index.name = SAMPLE_ID
        return frame
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        frame = pd.read_csv(path, sep="\t" if suffix != ".csv" else ",")
    else:
        raise ReferenceDbError(f"{path}: unsupported table format {suffix!r} (parquet, csv, h5ad)")
    key = SAMPLE_ID if SAMPLE_ID in frame.columns else frame.columns[0]
    frame = frame.set_index(key)
    frame.index = frame.index.astype(str)
    frame.index.name = SAMPLE_ID
    return frame


def _hash_arrays(
    genes: Sequence[str], arrays: Sequence[NDArray[Any]], tables: Sequence[bytes]
) -> str:
    h = hashlib.sha256()
    h.update("\n".join(genes).encode())
    for a in arrays:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    for t in tables:
        h.update(t)
    return h.hexdigest()


def _table_bytes(frame: pd.DataFrame) -> bytes:
    """Canonical bytes of a table for hashing (parquet files themselves embed versions)."""
    return frame.to_csv(index=True, float_format="%.9g").encode()


def _embed(embed_fn: EmbedFn, x: NDArray[Any], batch_size: int) -> NDArray[Any]:
    parts = []
    for lo in range(0, x.shape[0], batch_size):
        batch = np.ascontiguousarray(x[lo : lo + batch_size], dtype=np.float32)
        out = np.asarray(embed_fn(batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != batch.shape[0]:
            raise ReferenceDbError(
                f"embedding function returned shape {out.shape} for a batch of {batch.shape[0]}"
            )
        parts.append(out)
    return _unit(np.concatenate(parts, axis=0), x.shape[0])


def _unit(emb: NDArray[Any], n_rows: int) -> NDArray[Any]:
    """Checked, L2-normalised embeddings [n_rows, E]."""
    if emb.ndim != 2 or emb.shape[0] != n_rows:
        raise ReferenceDbError(f"embeddings have shape {emb.shape}, expected [{n_rows}, E]")
    if not np.isfinite(emb).all():
        raise ReferenceDbError("the RNA encoder returned NaN/inf embeddings")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ReferenceDbError("the RNA encoder returned an all-zero embedding")
    unit: NDArray[Any] = (emb / norms).astype(np.float32)
    return unit


def build_reference(
    expression: pd.DataFrame,
    metadata: pd.DataFrame | None,
    embed_fn: EmbedFn | None,
    encoder_genes: Sequence[str],
    *,
    name: str,
    encoder: str = "",
    collection: GeneSetCollection | None = None,
    expression_dtype: Literal["float16", "float32"] = "float32",
    reorder: bool = False,
    synthetic: bool = False,
    batch_size: int = 256,
    embeddings: NDArray[Any] | None = None,
) -> ReferenceDB:
    """Build a reference from samples x genes log1p(TPM) and per-sample metadata.

    The Hallmark scores are computed from the stored (possibly float16-rounded) expression,
    so that on-demand scores of new sets are on exactly the same footing. `embeddings`
    [n, E] (aligned space, row order of `expression`) replaces `embed_fn` when the RNA
    embeddings were computed elsewhere (a precomputed table through the alignment's RNA head).
    """
    if expression.shape[0] == 0:
        raise ReferenceDbError("expression matrix has no samples")
    if expression.index.has_duplicates:
        raise ReferenceDbError("expression has duplicate sample ids")
    perm = check_gene_order([str(c) for c in expression.columns], encoder_genes, reorder=reorder)
    values = expression.to_numpy()
    if not np.issubdtype(values.dtype, np.number):
        raise ReferenceDbError("expression must be numeric (samples x genes, log1p(TPM))")
    if perm is not None:
        values = values[:, perm]
    bad = ~np.isfinite(values)
    if bad.any():
        rows = expression.index[bad.any(axis=1)]
        raise ReferenceDbError(
            f"expression has {int(bad.sum())} NaN/inf values in {rows.size} samples "
            f"(e.g. sample {rows[0]!s}); impute or drop them before building a reference"
        )
    stored = values.astype(expression_dtype)
    genes = tuple(str(g).strip().upper() for g in encoder_genes)
    sample_ids = [str(s) for s in expression.index]
    meta = _align_metadata(metadata, sample_ids)

    if embeddings is None:
        if embed_fn is None:
            raise ReferenceDbError("an RNA embed function or precomputed embeddings are needed")
        embeddings = _embed(embed_fn, stored.astype(np.float32), batch_size)
    else:
        embeddings = _unit(np.asarray(embeddings, dtype=np.float32), len(sample_ids))
    hallmark, skipped = _hallmark_scores(stored, genes, sample_ids, collection or load_hallmark())
    digest = _hash_arrays(genes, [stored, embeddings, hallmark.to_numpy()], [_table_bytes(meta)])
    manifest = ReferenceManifest(
        schema_=REFERENCE_SCHEMA,
        name=name,
        version=digest[:12],
        content_hash=digest,
        n_samples=len(sample_ids),
        n_genes=len(genes),
        embed_dim=int(embeddings.shape[1]),
        expression_dtype=expression_dtype,
        hallmark_collection=(collection.source if collection else HALLMARK_COLLECTION),
        hallmark_sets=list(hallmark.columns),
        hallmark_skipped=skipped,
        encoder=encoder,
        synthetic=synthetic,
    )
    return ReferenceDB(manifest, genes, stored, embeddings, hallmark, meta)


def _align_metadata(metadata: pd.DataFrame | None, sample_ids: list[str]) -> pd.DataFrame:
    if metadata is None:
        return pd.DataFrame({SAMPLE_ID: sample_ids})
    meta = metadata.copy()
    if SAMPLE_ID in meta.columns:
        meta = meta.set_index(SAMPLE_ID)
    meta.index = meta.index.astype(str)
    missing = [s for s in sample_ids if s not in meta.index]
    if missing:
        raise ReferenceDbError(
            f"metadata lacks {len(missing)} of {len(sample_ids)} expression samples "
            f"(e.g. {missing[:3]}); it needs one row per sample, keyed by {SAMPLE_ID!r}"
        )
    meta = meta.loc[sample_ids]
    meta.index.name = SAMPLE_ID
    return meta.reset_index()


def _hallmark_scores(
    values: NDArray[Any],
    genes: tuple[str, ...],
    sample_ids: list[str],
    collection: GeneSetCollection,
) -> tuple[pd.DataFrame, dict[str, str]]:
    index = GeneIndex(genes)
    names, idx, skipped = [], [], {}
    for name, gs in collection.items():
        try:
            resolved = index.resolve(gs)
        except LowCoverageError as err:
            skipped[name] = str(err)
            continue
        names.append(name)
        idx.append(resolved.indices)
    scores = ssgsea(values.astype(np.float32), idx) if idx else np.zeros((len(sample_ids), 0))
    return pd.DataFrame(scores, index=pd.Index(sample_ids, name=SAMPLE_ID), columns=names), skipped
