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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from histoprompt.core.modelspec import EncoderSpec, ModelCard
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

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import NDArray

    from histoprompt.export.alignment import AlignmentModel
    from histoprompt.export.encoders import LoadedEncoder
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


def export_bundle(
    bundle_dir: Path,
    card: ModelCard,
    encoder: LoadedEncoder,
    rna_encoder: RnaEncoder,
    model: AlignmentModel,
    expression: pd.DataFrame,
    metrics: dict[str, Any],
) -> None:
    """Write ONNX files (parity-checked), card, contract, metrics and the RNA reference DB.

    `expression` is samples x genes log1p(TPM) in the RNA encoder's gene order; it becomes
    the Soft-kNN reference of pathway_query.
    """
    import torch

    from histoprompt.export.alignment import RnaEmbedExport, SlideEmbedExport
    from histoprompt.export.onnx_export import (
        export_rna_embed,
        export_slide_embed,
        export_tile_encoder,
        write_parity,
    )

    bundle_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    rna_export = RnaEmbedExport(rna_encoder, model).eval()
    contract = rna_encoder.contract
    records = [
        export_tile_encoder(
            encoder.module, encoder.spec.input_px, bundle_dir / "tile_encoder.onnx"
        ),
        export_slide_embed(
            SlideEmbedExport(model).eval(), encoder.spec.embed_dim, bundle_dir / "slide_embed.onnx"
        ),
        export_rna_embed(rna_export, contract.n_genes, bundle_dir / "rna_embed.onnx"),
    ]
    write_parity(records, bundle_dir / "parity.json")
    (bundle_dir / "gene_contract.json").write_text(contract.model_dump_json())
    (bundle_dir / "encoder.json").write_text(card.encoder.model_dump_json(indent=1))
    (bundle_dir / "model_card.json").write_text(card.model_dump_json(indent=1))
    doc = {**metrics, "synthetic": card.synthetic, "model_version": card.version}
    (bundle_dir / "metrics.json").write_text(json.dumps(doc, indent=1, sort_keys=True))

    from histoprompt.core.reference_build import build_reference
    from histoprompt.core.reference_store import save_reference

    def embed_fn(x: NDArray[Any]) -> NDArray[Any]:
        with torch.no_grad():
            out: NDArray[Any] = rna_export(torch.from_numpy(x)).numpy()
        return out

    ref = build_reference(
        expression,
        None,
        embed_fn,
        list(contract.genes),
        name="synthetic-demo" if card.synthetic else card.name,
        encoder=card.version,
        synthetic=card.synthetic,
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
    export_bundle(bundle_dir, card, encoder, rna_encoder, result.model, expression, metrics)
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
    repo = repo_dir if repo_dir is not None else out_dir / "model_repository"
    write_model_repository(bundle, repo, flavor)
    return DemoBundle(
        card=demo_card(config),
        bundle_dir=bundle,
        model_repository=repo,
        metrics=json.loads((bundle / "metrics.json").read_text()),
        parity=json.loads((bundle / "parity.json").read_text()),
    )
