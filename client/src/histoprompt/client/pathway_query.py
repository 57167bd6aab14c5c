"""Open-vocabulary queries through Triton `pathway_query` on a stored slide embedding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from histoprompt.core import names

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from histoprompt.client.settings import ClientSettings
    from histoprompt.core.genesets import GeneSet

__all__ = ["QueryRow", "reference_genes", "request_strings", "run_pathway_query"]


@dataclass(frozen=True)
class QueryRow:
    gene_set: str
    score: float
    method: str
    coverage: float
    genes: int
    unknown: tuple[str, ...] | None
    # where the score falls among the reference samples' scores of the set (0-100; None when
    # the method is not on the reference's ssGSEA scale or the server predates PERCENTILE)
    percentile: float | None = None

    @property
    def found(self) -> int:
        """Genes of the set the reference has (from the server's coverage fraction)."""
        return round(self.coverage * self.genes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "gene_set": self.gene_set,
            "score": self.score,
            "method": self.method,
            "coverage": self.coverage,
            "percentile": self.percentile,
            "genes": self.genes,
            "found": self.found,
            "unknown": None if self.unknown is None else list(self.unknown),
        }


def request_strings(sets: list[GeneSet], bundled: set[str]) -> list[str]:
    """GENE_SETS values: a bundled Hallmark by name, anything else as JSON {name, genes}."""
    return [
        gs.name if gs.name in bundled else json.dumps({"name": gs.name, "genes": list(gs.genes)})
        for gs in sets
    ]


def run_pathway_query(
    settings: ClientSettings,
    embedding: NDArray[Any],
    gene_sets: list[str],
    method: str | None,
) -> tuple[NDArray[Any], NDArray[Any], str, NDArray[Any]]:
    """SCORES [K], COVERAGE [K] for one slide embedding [E], the method that scored, and
    PERCENTILE [K] (each score among the reference's scores of its set; NaN off that scale).

    The CLI spells methods with a dash (soft-knn), the server with an underscore (soft_knn).
    """
    import numpy as np
    import tritonclient.grpc as grpcclient

    from histoprompt.client.services import triton_client, triton_errors

    emb = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
    sets = np.array([s.encode() for s in gene_sets], dtype=np.object_)
    inputs = [
        grpcclient.InferInput(names.TENSOR_SLIDE_EMBEDDING, list(emb.shape), "FP32"),
        grpcclient.InferInput(names.TENSOR_GENE_SETS, [len(gene_sets)], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(emb)
    inputs[1].set_data_from_numpy(sets)
    wire = method.replace("-", "_") if method else None
    if wire:
        m = grpcclient.InferInput(names.TENSOR_METHOD, [1], "BYTES")
        m.set_data_from_numpy(np.array([wire.encode()], dtype=np.object_))
        inputs.append(m)
    outputs = [
        grpcclient.InferRequestedOutput(names.TENSOR_SCORES),
        grpcclient.InferRequestedOutput(names.TENSOR_COVERAGE),
        grpcclient.InferRequestedOutput(names.TENSOR_PERCENTILE),
    ]
    client = triton_client(settings)
    try:
        with triton_errors(settings, f"querying {names.MODEL_PATHWAY_QUERY}"):
            result = client.infer(
                names.MODEL_PATHWAY_QUERY, inputs, outputs=outputs, client_timeout=300.0
            )
            if not wire:
                config = client.get_model_config(names.MODEL_PATHWAY_QUERY, as_json=True)
                wire = _params(config).get("default_method", "")
            if not wire:
                from histoprompt.core.pathway_engine import DEFAULT_METHOD

                wire = DEFAULT_METHOD
    finally:
        client.close()
    scores = np.asarray(result.as_numpy(names.TENSOR_SCORES), dtype=np.float64).reshape(-1)
    coverage = np.asarray(result.as_numpy(names.TENSOR_COVERAGE), dtype=np.float64).reshape(-1)
    if scores.shape[0] != len(gene_sets) or coverage.shape[0] != len(gene_sets):
        from histoprompt.core.errors import HistopromptError

        raise HistopromptError(
            f"{names.MODEL_PATHWAY_QUERY} returned {scores.shape[0]} scores for "
            f"{len(gene_sets)} gene sets"
        )
    pct = np.asarray(result.as_numpy(names.TENSOR_PERCENTILE), dtype=np.float64).reshape(-1)
    return scores, coverage, wire, pct


def _params(config: dict[str, Any]) -> dict[str, str]:
    raw = config.get("config", config).get("parameters", {})
    return {str(k): str(v.get("string_value", "")) for k, v in raw.items()}


def served_reference_uri(settings: ClientSettings) -> str:
    """pathway_query's `reference_uri` parameter ('' when it reads a local reference)."""
    from histoprompt.client.services import triton_client, triton_errors

    client = triton_client(settings)
    try:
        with triton_errors(settings, f"reading the {names.MODEL_PATHWAY_QUERY} config"):
            config = client.get_model_config(names.MODEL_PATHWAY_QUERY, as_json=True)
    finally:
        client.close()
    return _params(config).get("reference_uri", "")


def _reference_prefix(client: Any, bucket: str, key: str) -> str:
    """`references/<name>[/<version>]` -> the version folder (latest.json when no version)."""
    import re

    parts = [p for p in key.split("/") if p]
    if re.fullmatch(r"[0-9a-f]{12}", parts[-1]):
        return "/".join(parts) + "/"
    latest = json.loads(_get(client, bucket, "/".join(parts) + "/latest.json"))
    return "/".join(parts) + f"/{latest['version']}/"


def reference_genes(settings: ClientSettings) -> tuple[str, ...] | None:
    """The served RNA reference's gene symbols, to name a query's unknown genes.

    Where: pathway_query's `reference_uri` when it is an s3:// URI, else
    HISTOPROMPT_REFERENCE_NAME under `references/` in the models bucket. Never a guess: a
    reference other than the served one would name the wrong genes. Best effort: None when
    the reference is not reachable from here (e.g. it sits inside Triton's model repository);
    coverage still comes from the server.
    """
    from histoprompt.client.services import minio_client
    from histoprompt.core.s3 import parse_s3_uri

    client = minio_client(settings)
    root = "references/"
    try:
        uri = served_reference_uri(settings)
        if uri.startswith("s3://"):
            bucket, key = parse_s3_uri(uri)
        else:
            bucket, name = settings.models_bucket, settings.reference_name
            if name is None:
                return None
            key = root + name
        text = _get(client, bucket, _reference_prefix(client, bucket, key) + "genes.txt")
    except Exception:  # noqa: BLE001 - unknown genes are optional detail, coverage is not
        return None
    return tuple(text.decode().split())


def _get(client: Any, bucket: str, key: str) -> bytes:
    from histoprompt.core.s3 import read_object

    return read_object(client, bucket, key)
