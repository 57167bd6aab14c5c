"""Serve the checked-in `pathway_query` on a SYNTHETIC reference, for the integration test and
the benchmark.

The model goes into the model repository under its own name, so the repository's
`pathway_query` (and the `slide_to_pathways` ensemble that calls it) stay as other tests and
modules left them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from histoprompt.core import names
from histoprompt.core.reference import ReferenceDB
from histoprompt.core.reference_build import build_reference
from histoprompt.core.reference_store import save_reference_s3
from histoprompt.core.reference_synthetic import linear_embed_fn, synthetic_reference_inputs
from histoprompt.core.s3 import make_minio
from histoprompt.core.settings import ConnectionSettings
from histoprompt.export.model_repo import config_text, parse_config

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "model_repository" / names.MODEL_PATHWAY_QUERY


@dataclass(frozen=True)
class ServedReference:
    """What `prepare_pathway_query` built; the model is written, not loaded yet."""

    ref: ReferenceDB
    model_name: str
    reference_uri: str  # s3://<models bucket>/references/<name> (the model's reference_uri)
    saved_uri: str  # what save_reference_s3 returned: the version's folder
    embed_dim: int
    build_s: float
    upload_s: float


def slide_dim(config: str) -> int:
    """E from a pathway_query config: SLIDE_EMBEDDING dims [ -1, E ]."""
    for tensor in parse_config(config).input:
        if tensor.name == names.TENSOR_SLIDE_EMBEDDING:
            return int(tensor.dims[-1])
    raise ValueError("pathway_query config has no SLIDE_EMBEDDING input")


def set_param(config: str, key: str, value: str) -> str:
    """`config` with string parameter `key` set to `value` (added if absent)."""
    cfg = parse_config(config)
    cfg.parameters[key].string_value = value
    return config_text(cfg)


def rename_model(config: str, model_name: str) -> str:
    """`config` with its top-level `name:` set to `model_name`."""
    cfg = parse_config(config)
    if cfg.name != names.MODEL_PATHWAY_QUERY:
        raise ValueError(f"not a {names.MODEL_PATHWAY_QUERY} config: {cfg.name!r}")
    cfg.name = model_name
    return config_text(cfg)


def prepare_pathway_query(
    settings: ConnectionSettings,
    model_repository: Path,
    *,
    model_name: str,
    reference_name: str,
    n_samples: int,
    seed: int,
    n_genes: int | None = None,
) -> ServedReference:
    """Build a SYNTHETIC reference (UNTRAINED linear RNA encoder, the aligned width of the
    checked-in config), upload it to the models bucket, and write the checked-in
    pathway_query as `model_name` into `model_repository` with `reference_uri` pointing there.

    `n_genes=None` keeps every gene of `synthetic_reference_inputs` (all Hallmark genes).
    """
    if model_name == names.MODEL_PATHWAY_QUERY:
        raise ValueError("use a name of its own: the shared pathway_query must stay as it is")
    config = (CHECKED_IN / "config.pbtxt").read_text()
    dim = slide_dim(config)
    t = time.perf_counter()
    inputs = synthetic_reference_inputs(n_samples, n_genes=n_genes, seed=seed)
    genes = list(inputs.expression.columns)
    ref = build_reference(
        inputs.expression,
        inputs.metadata,
        linear_embed_fn(len(genes), dim),
        genes,
        name=reference_name,
        synthetic=True,
    )
    build_s = time.perf_counter() - t
    bucket = settings.models_bucket
    t = time.perf_counter()
    saved_uri = save_reference_s3(ref, make_minio(settings), bucket)
    upload_s = time.perf_counter() - t
    uri = f"s3://{bucket}/references/{reference_name}"
    target = model_repository / model_name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(CHECKED_IN, target, ignore=shutil.ignore_patterns("__pycache__"))
    text = set_param(rename_model(config, model_name), "reference_uri", uri)
    (target / "config.pbtxt").write_text(text)
    return ServedReference(ref, model_name, uri, saved_uri, dim, build_s, upload_s)
