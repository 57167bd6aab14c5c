"""Saving and loading reference versions, on local disk or in S3 (layout: `reference`).

In S3 a version lives under `s3://<models-bucket>/references/<name>/<version>/`, with
`references/<name>/latest.json` naming the newest version; `manifest.json` is written last,
so a version without one is an unfinished upload.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from histoprompt.core.errors import NotFoundError
from histoprompt.core.reference import ReferenceDB, ReferenceDbError, ReferenceManifest

if TYPE_CHECKING:
    from minio import Minio

__all__ = [
    "load_reference",
    "load_reference_s3",
    "load_reference_uri",
    "s3_prefix",
    "save_reference",
    "save_reference_s3",
]

REFERENCES_PREFIX = "references"
MANIFEST = "manifest.json"
LATEST = "latest.json"
_GENES = "genes.txt"
_EXPRESSION = "expression.npy"
_EMBEDDINGS = "embeddings.npy"
_HALLMARK = "hallmark_scores.parquet"
_METADATA = "metadata.parquet"


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
        raise ReferenceDbError(f"{where}/{MANIFEST} is not a reference manifest: {err}") from err
    raw = {f: read(f) for f in (_GENES, _EXPRESSION, _EMBEDDINGS, _HALLMARK, _METADATA)}
    for fname, data in raw.items():
        want = manifest.files.get(fname)
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise ReferenceDbError(f"{where}/{fname} does not match its manifest hash")
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
        raise ReferenceDbError(f"{where}: array shapes disagree with the manifest")
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
    from histoprompt.core.s3 import read_object

    def get(key: str) -> bytes:
        with s3_errors(f"reading s3://{bucket}/{key}"):
            return read_object(client, bucket, key)

    if version is None:
        version = str(json.loads(get(f"{root.strip('/')}/{name}/{LATEST}"))["version"])
    prefix = s3_prefix(name, version, root)
    return _from_payload(lambda f: get(prefix + f), f"s3://{bucket}/{prefix}")


def load_reference_uri(uri: str, client: Minio | None = None) -> ReferenceDB:
    """`s3://bucket/<root>/<name>[/<version>]` (needs `client`) or a local path."""
    if uri.startswith("s3://"):
        from histoprompt.core.s3 import parse_s3_uri

        if client is None:
            raise ReferenceDbError("an s3:// reference URI needs an S3 client")
        bucket, key = parse_s3_uri(uri)
        parts = [p for p in key.split("/") if p]
        if len(parts) < 2:
            raise ReferenceDbError(
                f"reference URI {uri!r} must be s3://<bucket>/{REFERENCES_PREFIX}/<name>[/<version>]"
            )
        if len(parts) >= 3 and re.fullmatch(r"[0-9a-f]{12}", parts[-1]):
            return load_reference_s3(client, bucket, parts[-2], parts[-1], "/".join(parts[:-2]))
        return load_reference_s3(client, bucket, parts[-1], None, "/".join(parts[:-1]))
    path = Path(uri)
    if (path / MANIFEST).is_file():
        return load_reference(path)
    return load_reference(path.parent, path.name)
