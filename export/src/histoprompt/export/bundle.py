"""The model bundle: trained alignment + ONNX artifacts + model card, and the demo bundle.

`build_demo_bundle` trains the tiny-encoder alignment on the SYNTHETIC cohort (or reuses a
cached run keyed by the config hash under `.cache/`), exports the ONNX files with parity
checks, builds the RNA reference DB, and writes a ready-to-serve Triton model repository.

Bundle layout (`<cache>/bundles/<version>/`):
  model_card.json, encoder.json, tile_encoder.onnx, slide_embed.onnx, rna_embed.onnx,
  gene_contract.json, parity.json, metrics.json, alignment/ (training run), reference/
  (RNA reference DB), SYNTHETIC.txt
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from histoprompt.core.modelspec import EncoderSpec, ModelCard, WeightFile
from histoprompt.export.alignment_training import TrainConfig, config_hash
from histoprompt.export.cohort import SYNTHETIC_NOTE, CohortConfig, hallmark_gmt_path, read_gmt
from histoprompt.export.encoder_specs import encoder_spec
from histoprompt.export.errors import ExportError
from histoprompt.export.model_repo import (
    Flavor,
    TileEncoderPlatform,
    install_artifacts,
    render,
    write_repository,
)
from histoprompt.export.tile_context import ensure_tile_context

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import NDArray

    from histoprompt.export.alignment import AlignmentModel
    from histoprompt.export.alignment_training import PairedEmbeddings
    from histoprompt.export.encoders import LoadedEncoder
    from histoprompt.export.onnx_export import ParityRecord
    from histoprompt.export.rna import RnaEncoder

DONE = "bundle.done"
DEFAULT_CACHE = Path(".cache/histoprompt")


class DemoConfig(BaseModel):
    """Everything that determines the demo model; its hash is the model version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    encoder: str = "tiny"
    seed: int = 0
    rna_embed_dim: int = Field(default=128, gt=0)
    cohort: CohortConfig = CohortConfig()
    train: TrainConfig = TrainConfig()
    # Part of the version: bundles built before the served predictor existed are rebuilt.
    predictor: tuple[str, ...] = ("ridge", "mlp")


def demo_config(seed: int = 0, encoder: str = "tiny") -> DemoConfig:
    """The demo configuration; `encoder="null"` gives the near-free data-path bundle."""
    encoder_spec(encoder)  # unknown names fail here, before any work
    return DemoConfig(
        encoder=encoder,
        seed=seed,
        cohort=CohortConfig(seed=seed),
        train=TrainConfig(seed=seed),
    )


def _n_genes() -> int:
    return len({g for members in read_gmt(hallmark_gmt_path()).values() for g in members})


def demo_card(config: DemoConfig) -> ModelCard:
    """The demo ModelCard, computed from the config alone (no training needed)."""
    spec: EncoderSpec = encoder_spec(config.encoder).model_copy(update={"untrained": True})
    version = f"{config.encoder}-{config_hash(config.model_dump(), 'seed-weights')}"
    return ModelCard(
        name="histoprompt-demo",
        version=version,
        encoder=spec,
        aligned_dim=config.train.aligned_dim,
        rna_genes=_n_genes(),
        synthetic=True,
    )


@dataclass(frozen=True)
class DemoBundle:
    card: ModelCard
    bundle_dir: Path
    model_repository: Path
    metrics: dict[str, Any]
    parity: dict[str, Any]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builders of the same bundle across processes (parallel test sessions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return cache_dir
    env = os.environ.get("HISTOPROMPT_CACHE_DIR")
    return Path(env) if env else DEFAULT_CACHE


@dataclass(frozen=True)
class CardInputs:
    """What the model card records beyond the served configs (see export.model_card).

    `rna_table`: precomputed RNA-encoder outputs (sample id -> vector, rna.read_rna_embeddings)
    when the RNA model runs elsewhere; then the bundle has `rna_head.onnx` instead of
    `rna_embed.onnx` and the reference is embedded from the table.
    """

    data: PairedEmbeddings | None = None
    sources: tuple[WeightFile, ...] = ()
    rna_source: str = ""
    licences: tuple[tuple[str, str], ...] = ()
    rna_table: pd.DataFrame | None = None


def _export_networks(
    bundle_dir: Path,
    encoder: LoadedEncoder,
    rna_encoder: RnaEncoder | None,
    model: AlignmentModel,
    extra: CardInputs,
) -> tuple[list[ParityRecord], Callable[[NDArray[Any]], NDArray[Any]]]:
    """tile_encoder, slide_embed and rna_embed (or rna_head) ONNX files, parity-checked;
    and the function that embeds the reference rows in the aligned space."""
    import torch

    from histoprompt.export.alignment import RnaEmbedExport, SlideEmbedExport
    from histoprompt.export.onnx_export import (
        export_rna_embed,
        export_slide_embed,
        export_tile_encoder,
    )
    from histoprompt.export.rna_table import RnaHeadExport, export_rna_head

    records = [
        export_tile_encoder(
            encoder.module, encoder.spec.input_px, bundle_dir / "tile_encoder.onnx"
        ),
        export_slide_embed(
            SlideEmbedExport(model).eval(), encoder.spec.embed_dim, bundle_dir / "slide_embed.onnx"
        ),
    ]
    if rna_encoder is not None:
        rna_export: torch.nn.Module = RnaEmbedExport(rna_encoder, model).eval()
        n_in = rna_encoder.contract.n_genes
        records.append(export_rna_embed(rna_export, n_in, bundle_dir / "rna_embed.onnx"))
    else:
        assert extra.rna_table is not None
        rna_export = RnaHeadExport(model).eval()
        n_in = extra.rna_table.shape[1]
        records.append(export_rna_head(rna_export, n_in, bundle_dir / "rna_head.onnx"))

    def embed_fn(x: NDArray[Any]) -> NDArray[Any]:
        with torch.no_grad():
            out: NDArray[Any] = rna_export(torch.from_numpy(x)).numpy()
        return out

    return records, embed_fn


def export_bundle(
    bundle_dir: Path,
    card: ModelCard,
    encoder: LoadedEncoder,
    rna_encoder: RnaEncoder | None,
    model: AlignmentModel,
    expression: pd.DataFrame,
    metrics: dict[str, Any],
    inputs: CardInputs | None = None,
) -> ModelCard:
    """Write ONNX files (parity-checked), card, contract, metrics and the RNA reference DB.

    `expression` is samples x genes log1p(TPM) in the RNA encoder's gene order; it becomes
    the Soft-kNN reference of pathway_query. With the training pairs (`inputs.data`) the
    served predictor is trained and exported too (method `predictor`). Without an RNA
    encoder, `inputs.rna_table` holds the precomputed RNA embeddings of the expression rows.
    """
    from histoprompt.export.model_card import finish_card, training_data
    from histoprompt.export.onnx_export import write_parity
    from histoprompt.export.predictor_export import export_served_predictor

    extra = inputs or CardInputs()
    bundle_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    records, embed_fn = _export_networks(bundle_dir, encoder, rna_encoder, model, extra)
    methods = ["soft_knn"] + (["prototype"] if rna_encoder is not None else [])
    if extra.data is not None:
        served = export_served_predictor(
            bundle_dir, model, extra.data, expression, synthetic=card.synthetic
        )
        if served is not None:
            records.append(served[0])
            metrics = {**metrics, **served[1]}
            methods.append("predictor")
    write_parity(records, bundle_dir / "parity.json")
    if rna_encoder is not None:
        (bundle_dir / "gene_contract.json").write_text(rna_encoder.contract.model_dump_json())
    (bundle_dir / "encoder.json").write_text(card.encoder.model_dump_json(indent=1))
    rna_name = getattr(rna_encoder, "card_name", "tiny" if rna_encoder else "precomputed")
    card = finish_card(
        card,
        bundle_dir,
        sources=extra.sources,
        records=records,
        metrics=metrics,
        training=(
            training_data(extra.data, metrics, extra.rna_source or rna_name, card.synthetic)
            if extra.data is not None
            else None
        ),
        rna_encoder=rna_name,
        rna_preprocessing=getattr(rna_encoder, "preprocessing", "log1p_tpm"),
        licences=dict(extra.licences),
        methods=sorted(methods),
    )
    doc = {**metrics, "synthetic": card.synthetic, "model_version": card.version}
    (bundle_dir / "metrics.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
    _bundle_reference(bundle_dir, card, expression, embed_fn, extra.rna_table)
    return card


def _bundle_reference(
    bundle_dir: Path,
    card: ModelCard,
    expression: pd.DataFrame,
    embed_fn: Callable[[NDArray[Any]], NDArray[Any]],
    rna_table: pd.DataFrame | None,
) -> None:
    """The Soft-kNN reference: the expression rows, embedded from expression or the table."""
    import numpy as np

    from histoprompt.core.reference_build import build_reference
    from histoprompt.core.reference_store import save_reference

    precomputed = None
    if rna_table is not None:
        raw = rna_table.loc[[str(i) for i in expression.index]].to_numpy(np.float32)
        precomputed = embed_fn(raw)
    ref = build_reference(
        expression,
        None,
        embed_fn,
        [str(g) for g in expression.columns],
        name="synthetic-demo" if card.synthetic else card.name,
        encoder=card.version,
        synthetic=card.synthetic,
        embeddings=precomputed,
    )
    save_reference(ref, bundle_dir / "reference")


def train_and_export(
    config: DemoConfig, bundle_dir: Path, cache_root: Path, *, progress: bool = False
) -> None:
    """Generate the SYNTHETIC cohort, embed, train, export, check parity, build reference."""
    import pandas as pd

    from histoprompt.export.alignment_training import train_alignment
    from histoprompt.export.cohort import make_cohort
    from histoprompt.export.embedding import paired_embeddings
    from histoprompt.export.encoders import load_encoder
    from histoprompt.export.rna import fit_contract, small_rna_encoder

    card = demo_card(config)
    started = time.perf_counter()
    cohort = make_cohort(config.cohort)
    encoder = load_encoder(config.encoder, seed=config.seed)
    contract = fit_contract(cohort.genes, cohort.expression)
    rna_encoder = small_rna_encoder(contract, seed=config.seed, embed_dim=config.rna_embed_dim)
    data = paired_embeddings(cohort, encoder, rna_encoder, cache_root / "tile_embeddings")
    embed_seconds = time.perf_counter() - started
    result = train_alignment(
        data,
        config.train,
        bundle_dir / "alignment",
        fingerprint=card.version,
        progress=progress,
    )
    expression = pd.DataFrame(
        cohort.expression, index=list(cohort.patient_ids), columns=list(cohort.genes)
    )
    metrics = {**result.metrics, "embed_seconds": round(embed_seconds, 3)}
    untrained = (
        WeightFile(role="tile_encoder", name=config.encoder, file="-", untrained=True),
        WeightFile(role="rna_encoder", name="tiny", file="-", untrained=True),
    )
    inputs = CardInputs(data=data, sources=untrained, rna_source="tiny (UNTRAINED, fixed seed)")
    export_bundle(bundle_dir, card, encoder, rna_encoder, result.model, expression, metrics, inputs)
    (bundle_dir / "SYNTHETIC.txt").write_text(
        SYNTHETIC_NOTE + "\nThe tile encoder is UNTRAINED (fixed seed); the alignment module is "
        "trained on the synthetic cohort only.\n"
    )


def ensure_bundle(
    config: DemoConfig, cache_dir: Path | None = None, *, progress: bool = False
) -> Path:
    """The bundle folder for `config`, built once and reused (keyed by the model version)."""
    root = _cache_root(cache_dir)
    card = demo_card(config)
    bundle_dir = root / "bundles" / card.version
    with _locked(root / "locks" / f"{card.version}.lock"):
        if (bundle_dir / DONE).is_file():
            ensure_tile_context(bundle_dir)  # bundles built before tile_context existed
            return bundle_dir
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        building = bundle_dir.with_name(bundle_dir.name + ".building")
        if building.exists():
            shutil.rmtree(building)
        building.mkdir(parents=True)
        train_and_export(config, building, root, progress=progress)
        (building / DONE).write_text(card.version + "\n")
        building.rename(bundle_dir)
    return bundle_dir


def write_model_repository(
    bundle_dir: Path,
    out: Path,
    flavor: Flavor = Flavor.cpu,
    tile_platform: TileEncoderPlatform = TileEncoderPlatform.tensorrt,
    reference_uri: str = "",
) -> Path:
    """Configs + model.py for the bundle's card, then its artifacts into the version folders."""
    try:
        card = ModelCard.model_validate_json((bundle_dir / "model_card.json").read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"{bundle_dir} has no valid model_card.json: {err}") from err
    write_repository(render(card, flavor, tile_platform, reference_uri), out)
    ensure_tile_context(bundle_dir)
    install_artifacts(bundle_dir, out)
    return out


def build_demo_bundle(
    out_dir: Path,
    seed: int = 0,
    *,
    flavor: Flavor = Flavor.cpu,
    cache_dir: Path | None = None,
    repo_dir: Path | None = None,
    progress: bool = False,
    encoder: str = "tiny",
    licences: dict[str, str] | None = None,
) -> DemoBundle:
    """Train (or reuse) the demo alignment and write a served-ready repository.

    The repository goes to `repo_dir` (default `out_dir/model_repository`); `out_dir/bundle`
    is a copy of the artifacts. Takes ~40 s on 2 cores the first time, < 1 s when cached.
    """
    config = demo_config(seed, encoder)
    cached = ensure_bundle(config, cache_dir, progress=progress)
    bundle = out_dir / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    shutil.copytree(cached, bundle)
    if licences:
        from histoprompt.export.model_card import with_licences

        with_licences(bundle / "model_card.json", licences)
    repo = repo_dir if repo_dir is not None else out_dir / "model_repository"
    write_model_repository(bundle, repo, flavor)
    return DemoBundle(
        card=ModelCard.model_validate_json((bundle / "model_card.json").read_text()),
        bundle_dir=bundle,
        model_repository=repo,
        metrics=json.loads((bundle / "metrics.json").read_text()),
        parity=json.loads((bundle / "parity.json").read_text()),
    )
