"""The RNA reference database: what Soft-kNN and prototype prompting query.

A reference holds, for n reference samples (bulk RNA-seq profiles):

| file | content |
|---|---|
| `genes.txt` | G gene symbols, the RNA encoder's order |
| `expression.npy` | float16 or float32 [n, G], log1p(TPM), for new gene sets |
| `embeddings.npy` | float32 [n, E], L2-normalised, aligned space (`rna_embed` output) |
| `hallmark_scores.parquet` | raw ssGSEA scores [n, K] of the Hallmark sets, columns = set names |
| `metadata.parquet` | one row per sample (`sample_id`, e.g. `cancer_type`, `cohort`) |
| `manifest.json` | `ReferenceManifest`, written last: sizes, hashes, version |

The version is the first 12 hex characters of a sha256 over the genes and every array
and table, so the same inputs always give the same version and any change gives a new one.
In S3 it lives under `s3://<models-bucket>/references/<name>/<version>/`, with
`references/<name>/latest.json` naming the newest version.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from histoprompt.core.errors import InvalidInputError, NotFoundError
from histoprompt.core.genesets import (
    HALLMARK_COLLECTION,
    GeneIndex,
    GeneSetCollection,
    LowCoverageError,
    load_hallmark,
)
from histoprompt.core.ssgsea import DEFAULT_ALPHA, RankedExpression, ssgsea

if TYPE_CHECKING:
    from minio import Minio

__all__ = [
    "EmbedFn",
    "GeneOrderError",
    "ReferenceDB",
    "ReferenceError",
    "ReferenceManifest",
    "SyntheticReferenceInputs",
    "build_reference",
    "check_gene_order",
    "linear_embed_fn",
    "load_reference",
    "load_reference_s3",
    "load_reference_uri",
    "read_table",
    "save_reference",
    "save_reference_s3",
    "synthetic_reference_inputs",
]

EmbedFn = Callable[[NDArray[Any]], NDArray[Any]]
"""float32 [n, G] expression in the encoder's gene order -> aligned embeddings [n, E]."""

REFERENCE_SCHEMA = 1
REFERENCES_PREFIX = "references"
MANIFEST = "manifest.json"
LATEST = "latest.json"
_GENES = "genes.txt"
_EXPRESSION = "expression.npy"
_EMBEDDINGS = "embeddings.npy"
_HALLMARK = "hallmark_scores.parquet"
_METADATA = "metadata.parquet"
SAMPLE_ID = "sample_id"


class ReferenceError(InvalidInputError):
    """A reference that cannot be built or read as asked."""

    code = "invalid_reference"


class GeneOrderError(ReferenceError):
    """Expression genes that are not the RNA encoder's gene order."""

    code = "gene_order"


class ReferenceManifest(BaseModel):
    """`manifest.json` of a reference version; written last, so its presence means whole."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: int = Field(REFERENCE_SCHEMA, alias="schema")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    version: str
    content_hash: str
    n_samples: int = Field(gt=0)
    n_genes: int = Field(gt=0)
    embed_dim: int = Field(gt=0)
    expression_dtype: Literal["float16", "float32"]
    hallmark_collection: str = HALLMARK_COLLECTION
    hallmark_sets: list[str]
    hallmark_skipped: dict[str, str] = Field(default_factory=dict)
    alpha: float = DEFAULT_ALPHA
    ties: Literal["ordinal", "average"] = "ordinal"
    encoder: str = Field("", description="RNA encoder / alignment version that made embeddings")
    synthetic: bool = False
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    files: dict[str, str] = Field(default_factory=dict, description="file -> sha256")


@dataclass
class ReferenceDB:
    """One loaded reference version (arrays in memory)."""

    manifest: ReferenceManifest
    genes: tuple[str, ...]
    expression: NDArray[Any]  # [n, G] float16/float32
    embeddings: NDArray[Any]  # float32 [n, E], unit rows
    hallmark_scores: pd.DataFrame  # [n, K] raw ssGSEA, columns = set names
    metadata: pd.DataFrame  # n rows, includes SAMPLE_ID
    _ranked: RankedExpression | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def n_samples(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def embed_dim(self) -> int:
        return int(self.embeddings.shape[1])

    @cached_property
    def gene_index(self) -> GeneIndex:
        return GeneIndex(self.genes)

    @property
    def ranked(self) -> RankedExpression:
        """Ranks of the stored expression, computed on first use (seconds for 10k x 20k)."""
        if self._ranked is None:
            self._ranked = RankedExpression(
                self.expression, alpha=self.manifest.alpha, ties=self.manifest.ties
            )
        return self._ranked

    @cached_property
    def gene_mean(self) -> NDArray[Any]:
        """float64 [G] per-gene mean of the stored expression."""
        mean: NDArray[Any] = self.expression.astype(np.float64).mean(axis=0)
        return mean

    @cached_property
    def gene_std(self) -> NDArray[Any]:
        """float64 [G] per-gene standard deviation of the stored expression."""
        std: NDArray[Any] = self.expression.astype(np.float64).std(axis=0)
        return std


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
            raise ReferenceError(
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
        raise ReferenceError(f"{path}: unsupported table format {suffix!r} (parquet, csv, h5ad)")
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
            raise ReferenceError(
                f"embedding function returned shape {out.shape} for a batch of {batch.shape[0]}"
            )
        parts.append(out)
    emb = np.concatenate(parts, axis=0)
    if not np.isfinite(emb).all():
        raise ReferenceError("the RNA encoder returned NaN/inf embeddings")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ReferenceError("the RNA encoder returned an all-zero embedding")
    unit: NDArray[Any] = (emb / norms).astype(np.float32)
    return unit


def build_reference(
    expression: pd.DataFrame,
    metadata: pd.DataFrame | None,
    embed_fn: EmbedFn,
    encoder_genes: Sequence[str],
    *,
    name: str,
    encoder: str = "",
    collection: GeneSetCollection | None = None,
    expression_dtype: Literal["float16", "float32"] = "float32",
    reorder: bool = False,
    synthetic: bool = False,
    batch_size: int = 256,
) -> ReferenceDB:
    """Build a reference from samples x genes log1p(TPM) and per-sample metadata.

    The Hallmark scores are computed from the stored (possibly float16-rounded) expression,
    so that on-demand scores of new sets are on exactly the same footing.
    """
    if expression.shape[0] == 0:
        raise ReferenceError("expression matrix has no samples")
    if expression.index.has_duplicates:
        raise ReferenceError("expression has duplicate sample ids")
    perm = check_gene_order([str(c) for c in expression.columns], encoder_genes, reorder=reorder)
    values = expression.to_numpy()
    if not np.issubdtype(values.dtype, np.number):
        raise ReferenceError("expression must be numeric (samples x genes, log1p(TPM))")
    if perm is not None:
        values = values[:, perm]
    bad = ~np.isfinite(values)
    if bad.any():
        rows = expression.index[bad.any(axis=1)]
        raise ReferenceError(
            f"expression has {int(bad.sum())} NaN/inf values in {rows.size} samples "
            f"(e.g. sample {rows[0]!s}); impute or drop them before building a reference"
        )
    stored = values.astype(expression_dtype)
    genes = tuple(str(g).strip().upper() for g in encoder_genes)
    sample_ids = [str(s) for s in expression.index]
    meta = _align_metadata(metadata, sample_ids)

    embeddings = _embed(embed_fn, stored.astype(np.float32), batch_size)
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
        raise ReferenceError(
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


# -- storage ---------------------------------------------------------------------------------


def _npy(array: NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=True)
    return buf.getvalue()


def _payload(ref: ReferenceDB) -> dict[str, bytes]:
    return {
        _GENES: ("\n".join(ref.genes) + "\n").encode(),
        _EXPRESSION: _npy(ref.expression),
        _EMBEDDINGS: _npy(ref.embeddings),
        _HALLMARK: _parquet(ref.hallmark_scores),
        _METADATA: _parquet(ref.metadata),
    }


def _with_files(ref: ReferenceDB, payload: dict[str, bytes]) -> ReferenceManifest:
    files = {k: hashlib.sha256(v).hexdigest() for k, v in payload.items()}
    return ref.manifest.model_copy(update={"files": files})


def _manifest_bytes(manifest: ReferenceManifest) -> bytes:
    return manifest.model_dump_json(by_alias=True, indent=1).encode()


def save_reference(ref: ReferenceDB, directory: Path) -> Path:
    """Write a reference version into `directory/<name>/<version>/`; returns that path."""
    out = directory / ref.name / ref.version
    out.mkdir(parents=True, exist_ok=True)
    payload = _payload(ref)
    for fname, data in payload.items():
        (out / fname).write_bytes(data)
    (out / MANIFEST).write_bytes(_manifest_bytes(_with_files(ref, payload)))
    (directory / ref.name / LATEST).write_text(json.dumps({"version": ref.version}))
    return out


def s3_prefix(name: str, version: str, root: str = REFERENCES_PREFIX) -> str:
    return f"{root.strip('/')}/{name}/{version}/"


def save_reference_s3(
    ref: ReferenceDB, client: Minio, bucket: str, root: str = REFERENCES_PREFIX
) -> str:
    """Upload under `s3://bucket/<root>/<name>/<version>/`, manifest last; returns the URI."""
    from histoprompt.core.results import s3_errors

    prefix = s3_prefix(ref.name, ref.version, root)
    payload = _payload(ref)
    uploads = [*payload.items(), (MANIFEST, _manifest_bytes(_with_files(ref, payload)))]
    with s3_errors(f"writing reference {ref.name}/{ref.version} to s3://{bucket}"):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        for fname, data in uploads:
            client.put_object(bucket, prefix + fname, io.BytesIO(data), len(data))
        latest = json.dumps({"version": ref.version}).encode()
        client.put_object(
            bucket, f"{root.strip('/')}/{ref.name}/{LATEST}", io.BytesIO(latest), len(latest)
        )
    return f"s3://{bucket}/{prefix}"


def _from_payload(read: Callable[[str], bytes], where: str) -> ReferenceDB:
    try:
        manifest = ReferenceManifest.model_validate_json(read(MANIFEST))
    except NotFoundError as err:
        raise NotFoundError(
            f"no reference at {where} (no {MANIFEST}; an unfinished upload has none)"
        ) from err
    except ValueError as err:
        raise ReferenceError(f"{where}/{MANIFEST} is not a reference manifest: {err}") from err
    raw = {f: read(f) for f in (_GENES, _EXPRESSION, _EMBEDDINGS, _HALLMARK, _METADATA)}
    for fname, data in raw.items():
        want = manifest.files.get(fname)
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise ReferenceError(f"{where}/{fname} does not match its manifest hash")
    genes = tuple(raw[_GENES].decode().split())
    expression = np.load(io.BytesIO(raw[_EXPRESSION]), allow_pickle=False)
    embeddings = np.load(io.BytesIO(raw[_EMBEDDINGS]), allow_pickle=False)
    hallmark = pd.read_parquet(io.BytesIO(raw[_HALLMARK]))
    metadata = pd.read_parquet(io.BytesIO(raw[_METADATA]))
    if (
        expression.shape != (manifest.n_samples, manifest.n_genes)
        or len(genes) != len(set(genes))
        or embeddings.shape != (manifest.n_samples, manifest.embed_dim)
    ):
        raise ReferenceError(f"{where}: array shapes disagree with the manifest")
    return ReferenceDB(
        manifest, genes, expression, embeddings.astype(np.float32), hallmark, metadata
    )


def load_reference(
    directory: Path, name: str | None = None, version: str | None = None
) -> ReferenceDB:
    """Load from a local directory: a version dir itself, or `directory/<name>[/<version>]`."""
    where = directory
    if name is not None:
        where = directory / name
        if version is None:
            latest = where / LATEST
            if not latest.is_file():
                raise NotFoundError(f"no reference named {name!r} under {directory}")
            version = str(json.loads(latest.read_text())["version"])
        where = where / version

    def read(fname: str) -> bytes:
        try:
            return (where / fname).read_bytes()
        except FileNotFoundError as err:
            raise NotFoundError(f"{where / fname} does not exist") from err

    return _from_payload(read, str(where))


def load_reference_s3(
    client: Minio,
    bucket: str,
    name: str,
    version: str | None = None,
    root: str = REFERENCES_PREFIX,
) -> ReferenceDB:
    """Load `s3://bucket/<root>/<name>/<version>/` (the latest version when None)."""
    from histoprompt.core.results import s3_errors

    def get(key: str) -> bytes:
        with s3_errors(f"reading s3://{bucket}/{key}"):
            resp = client.get_object(bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

    if version is None:
        version = str(json.loads(get(f"{root.strip('/')}/{name}/{LATEST}"))["version"])
    prefix = s3_prefix(name, version, root)
    return _from_payload(lambda f: get(prefix + f), f"s3://{bucket}/{prefix}")


def load_reference_uri(uri: str, client: Minio | None = None) -> ReferenceDB:
    """`s3://bucket/<root>/<name>[/<version>]` (needs `client`) or a local path."""
    if uri.startswith("s3://"):
        from histoprompt.core.s3 import parse_s3_uri

        if client is None:
            raise ReferenceError("an s3:// reference URI needs an S3 client")
        bucket, key = parse_s3_uri(uri)
        parts = [p for p in key.split("/") if p]
        if len(parts) < 2:
            raise ReferenceError(
                f"reference URI {uri!r} must be s3://<bucket>/{REFERENCES_PREFIX}/<name>[/<version>]"
            )
        if len(parts) >= 3 and re.fullmatch(r"[0-9a-f]{12}", parts[-1]):
            return load_reference_s3(client, bucket, parts[-2], parts[-1], "/".join(parts[:-2]))
        return load_reference_s3(client, bucket, parts[-1], None, "/".join(parts[:-1]))
    path = Path(uri)
    if (path / MANIFEST).is_file():
        return load_reference(path)
    return load_reference(path.parent, path.name)


# -- SYNTHETIC inputs for tests, benchmarks and the demo --------------------------------------


@dataclass(frozen=True)
class SyntheticReferenceInputs:
    """SYNTHETIC expression driven by latent programs over Hallmark genes; no real samples."""

    expression: pd.DataFrame  # [n, G] log1p(TPM)-like, sample ids `SYN-R…`
    metadata: pd.DataFrame  # sample_id, cancer_type, cohort="synthetic", patient_id
    latents: NDArray[Any]  # [n, P]
    program_sets: tuple[str, ...]  # Hallmark set each latent drives


def synthetic_reference_inputs(
    n_samples: int,
    *,
    n_genes: int | None = None,
    n_programs: int = 6,
    seed: int = 0,
    collection: GeneSetCollection | None = None,
) -> SyntheticReferenceInputs:
    """SYNTHETIC reference inputs: each of `n_programs` latents raises one Hallmark set's genes.

    Genes are the Hallmark genes (all of them, or the first `n_genes`, padded with
    `SYNGENE…` fillers when more are asked for); about 20 % of values are exact zeros.
    """
    coll = collection or load_hallmark()
    rng = np.random.default_rng(seed)
    hallmark_genes = list(dict.fromkeys(g for gs in coll.values() for g in gs.genes))
    g = n_genes or len(hallmark_genes)
    genes = hallmark_genes[:g] + [f"SYNGENE{i}" for i in range(max(0, g - len(hallmark_genes)))]
    pos = {x: i for i, x in enumerate(genes)}
    names = [n for n in coll if sum(x in pos for x in coll[n].genes) >= 20][:n_programs]
    latents = rng.normal(size=(n_samples, len(names)))
    base = rng.gamma(2.0, 1.0, size=g)
    x = base + 0.6 * rng.normal(size=(n_samples, g))
    for p, name in enumerate(names):
        idx = [pos[x_] for x_ in coll[name].genes if x_ in pos]
        x[:, idx] += 0.8 * latents[:, [p]]
    x = np.where(x < np.quantile(x, 0.2), 0.0, x)
    x = np.round(np.maximum(x, 0.0), 3).astype(np.float32)
    ids = [f"SYN-R{i:05d}" for i in range(n_samples)]
    expr = pd.DataFrame(x, index=pd.Index(ids, name=SAMPLE_ID), columns=genes)
    meta = pd.DataFrame(
        {
            SAMPLE_ID: ids,
            "cancer_type": rng.choice(["SYN-A", "SYN-B", "SYN-C"], size=n_samples),
            "cohort": "synthetic",
            "patient_id": [f"SYN-P{i:05d}" for i in range(n_samples)],
        }
    )
    return SyntheticReferenceInputs(expr, meta, latents, tuple(names))


def linear_embed_fn(n_genes: int, embed_dim: int = 32, seed: int = 0) -> EmbedFn:
    """An UNTRAINED fixed-seed linear 'RNA encoder' for tests: centred expression x W."""
    w = np.random.default_rng(seed).normal(size=(n_genes, embed_dim)).astype(np.float32)
    w /= np.sqrt(n_genes)

    def embed(x: NDArray[Any]) -> NDArray[Any]:
        xc = x - x.mean(axis=1, keepdims=True)
        out: NDArray[Any] = xc @ w
        return out

    return embed
