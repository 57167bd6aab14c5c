"""BulkFormer, the RNA foundation model, in its published form.

Fixtures in tests/unit/assets were recorded once from the published code (KangBoming/BulkFormer
utils/BulkFormer.py, BulkFormer_block.py, Rope.py of the 2025-12-11 release, with
performer-pytorch 1.1.4 and torch_geometric 2.8.1; see each file's `source`):
* bulkformer_published_layouts.json: the state dict's key names, shapes and dtypes for the five
  released sizes;
* bulkformer_depth2_reference.*: a depth-reduced model (dim 32, 40 genes, 2 Performers) with
  random weights and graph, an input with masked and zero genes, and the published outputs.
Checkpoints written here hold random values (SYNTHETIC), never real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from histoprompt.export.bulkformer import VARIANTS, BulkFormerConfig
from histoprompt.export.bulkformer_load import (
    BULKFORMER_JSON,
    build_bulkformer,
    detect_config,
    load_bulkformer_state,
    meta_bulkformer,
)
from histoprompt.export.errors import WeightsError
from histoprompt.export.rna import load_rna_encoder

ASSETS = Path(__file__).parent / "assets"
LAYOUTS = json.loads((ASSETS / "bulkformer_published_layouts.json").read_text())["variants"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_architecture_has_the_published_key_names_and_shapes(variant: str) -> None:
    ours = meta_bulkformer(VARIANTS[variant]).state_dict()
    published = {k: (tuple(shape), dtype) for k, shape, dtype in LAYOUTS[variant]}
    assert list(ours) == list(published)  # same names, same order
    for key, tensor in ours.items():
        assert (tuple(tensor.shape), str(tensor.dtype).removeprefix("torch.")) == published[key]


def test_depth_reduced_outputs_equal_the_published_implementation() -> None:
    ref = json.loads((ASSETS / "bulkformer_depth2_reference.json").read_text())
    t = load_file(str(ASSETS / "bulkformer_depth2_reference.safetensors"))
    c = ref["config"]
    cfg = BulkFormerConfig(
        dim=c["dim"], gene_length=c["gene_length"], full_head=c["full_head"], p_repeat=c["p_repeat"]
    )
    model = build_bulkformer(cfg, t["graph"], t["graph_weight"]).eval()
    # the released files were saved from DDP: every key starts with `module.`
    state = {
        "module." + k.removeprefix("state."): v for k, v in t.items() if k.startswith("state.")
    }
    load_bulkformer_state(model, state, "reference")
    x = t["input"]
    mask_prob = torch.full((x.shape[0],), ref["mask_prob"])
    with torch.no_grad():
        feats = model.gene_features(x, mask_prob)
        expr = model.expression(x, mask_prob)
    assert (feats - t["output_gene_level"]).abs().max().item() <= 1e-5
    assert (expr - t["output_expr"]).abs().max().item() <= 1e-5


def _write_release(folder: Path, state: dict[str, torch.Tensor], n_genes: int) -> None:
    """A BulkFormer folder laid out as the release (SYNTHETIC values, random graph)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, folder / "bulkformer_37M.pt")
    gen = torch.Generator().manual_seed(0)
    edges = torch.stack(
        [torch.arange(n_genes).repeat(2), torch.randint(0, n_genes, (2 * n_genes,), generator=gen)]
    )
    torch.save(edges, folder / "G_tcga.pt")
    torch.save(torch.rand(edges.shape[1], generator=gen), folder / "G_tcga_weight.pt")
    genes = [f"ENSG{i:011d}" for i in range(n_genes)]  # SYNTHETIC ids, the real file has 20010
    pd.DataFrame({"ensg_id": genes, "gene_symbol": genes}).to_csv(
        folder / "bulkformer_gene_info.csv", index=False
    )
    files = {
        "checkpoint": "bulkformer_37M.pt",
        "graph": "G_tcga.pt",
        "graph_weight": "G_tcga_weight.pt",
        "gene_info": "bulkformer_gene_info.csv",
    }
    (folder / BULKFORMER_JSON).write_text(json.dumps(files))


def _random_state(variant: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    out = {}
    for key, shape, dtype in LAYOUTS[variant]:
        if dtype == "int64":
            out[key] = torch.zeros(shape, dtype=torch.int64)
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.02
    return out


@pytest.fixture(scope="module")
def release_37m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bulkformer") / "bulkformer_37m"
    _write_release(folder, _random_state("bulkformer_37m"), 20010)
    return folder


def test_released_37m_layout_loads_strictly_and_embeds(release_37m: Path) -> None:
    encoder = load_rna_encoder(release_37m)
    assert encoder.card_name == "bulkformer_37m" and encoder.embed_dim == 131
    contract = encoder.contract
    assert contract.n_genes == 20010 and set(contract.impute_means) == {-10.0}
    # expression with a quarter of the vocabulary absent: imputed with the mask token, counted
    rng = np.random.default_rng(0)
    genes = list(contract.genes[5000:])
    aligned = contract.align(rng.uniform(0, 6, size=(2, len(genes))), genes)
    assert aligned.n_missing == 5000 and (aligned.values[:, :5000] == -10).all()
    with torch.no_grad():
        out = encoder(torch.from_numpy(aligned.values))
    assert out.shape == (2, 131) and torch.isfinite(out).all()
    assert out[:, -3] == pytest.approx(5000 / 20010)  # the mask-rate feature


def test_corrupted_copy_is_refused_naming_the_keys(release_37m: Path, tmp_path: Path) -> None:
    state = _random_state("bulkformer_37m")
    state["gb_formers.0.f.0.net.layers.0.0.fn.to_qq.weight"] = state.pop(
        "gb_formers.0.f.0.net.layers.0.0.fn.to_q.weight"
    )
    _write_release(tmp_path / "bad", state, 20010)
    with pytest.raises(WeightsError) as err:
        load_rna_encoder(tmp_path / "bad")
    text = str(err.value)
    assert "expected the bulkformer_37m layout" in text
    assert "gb_formers.0.f.0.net.layers.0.0.fn.to_q.weight" in text  # first missing
    assert "gb_formers.0.f.0.net.layers.0.0.fn.to_qq.weight" in text  # first unexpected


def test_wrong_size_says_which_layout_the_file_has(tmp_path: Path) -> None:
    state = _random_state("bulkformer_37m")
    _write_release(tmp_path / "r", state, 20010)
    spec = json.loads((tmp_path / "r" / BULKFORMER_JSON).read_text())
    spec["variant"] = "bulkformer_50m"
    (tmp_path / "r" / BULKFORMER_JSON).write_text(json.dumps(spec))
    with pytest.raises(
        WeightsError, match="expected the bulkformer_50m layout; the file looks like bulkformer_37m"
    ):
        load_rna_encoder(tmp_path / "r")
    assert detect_config(state).dim == 128


def test_depth_reduced_encoder_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    from histoprompt.export.bulkformer_load import BulkFormerEncoder
    from histoprompt.export.onnx_export import export_rna_embed
    from histoprompt.export.rna import GeneContract

    n = 48
    gen = torch.Generator().manual_seed(2)
    edges = torch.stack([torch.arange(n).repeat(3), torch.randint(0, n, (3 * n,), generator=gen)])
    model = build_bulkformer(
        BulkFormerConfig(dim=32, gene_length=n, p_repeat=2), edges, torch.rand(3 * n)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    contract = GeneContract(genes=tuple(f"G{i}" for i in range(n)), impute_means=(-10.0,) * n)
    encoder = BulkFormerEncoder(model, contract, "bulkformer_test").eval()
    record = export_rna_embed(encoder, n, tmp_path / "rna_embed.onnx")
    assert record.passed and record.max_abs_err <= 1e-4


@pytest.mark.slow
def test_train_with_a_bulkformer_folder_end_to_end(tmp_path: Path) -> None:
    """`train --rna-encoder <BulkFormer folder>`: expression keyed by symbols maps onto the
    Ensembl order, the bundle exports BulkFormer inside rna_embed.onnx, the reference is keyed
    by symbols so the Hallmark predictor trains; the card names the RNA weight files."""
    from helpers.cohort_files import write_cohort_files
    from typer.testing import CliRunner

    from histoprompt.core.modelspec import ModelCard
    from histoprompt.export.cli import app
    from histoprompt.export.cohort import CohortConfig, make_cohort
    from histoprompt.export.encoder_specs import encoder_spec

    cohort = make_cohort(CohortConfig(n_patients=12, min_tiles=4, max_tiles=5, seed=4))
    rng = np.random.default_rng(3)
    dim = encoder_spec("null").embed_dim
    # SYNTHETIC tile embeddings
    inputs = write_cohort_files(
        cohort, tmp_path, lambda slide: rng.normal(size=(len(slide.tiles), dim)).astype(np.float32)
    )
    n = len(cohort.genes)
    cfg = BulkFormerConfig(dim=16, gene_length=n, p_repeat=1)
    folder = tmp_path / "bulkformer"
    state = {k: torch.randn(v.shape) * 0.05 for k, v in meta_bulkformer(cfg).state_dict().items()}
    state = {k: v.long() if "calls_since" in k else v for k, v in state.items()}
    _write_release(folder, state, n)
    ids = [f"ENSG{i:011d}" for i in range(n)]
    pd.DataFrame({"ensg_id": ids, "gene_symbol": list(cohort.genes)}).to_csv(
        folder / "bulkformer_gene_info.csv", index=False
    )
    spec = json.loads((folder / BULKFORMER_JSON).read_text())
    (folder / BULKFORMER_JSON).write_text(json.dumps({**spec, "config": cfg.model_dump()}))
    args = ["train", *inputs, "--out", str(tmp_path / "bundle")]
    result = CliRunner().invoke(
        app, [*args, "--rna-encoder", str(folder), "--epochs", "2", "--encoder", "null"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "bundle" / "metrics.json").read_text())
    assert metrics["rna_genes_missing"] == 0  # every symbol found its Ensembl id
    card = ModelCard.model_validate_json((tmp_path / "bundle" / "model_card.json").read_text())
    assert card.rna_encoder.startswith("bulkformer") and "mask token" in card.rna_preprocessing
    assert {p.model for p in card.parity} >= {"rna_embed", "predictor"}
    assert all(p.passed for p in card.parity)
    assert {w.file.rsplit("/", 1)[-1] for w in card.weights if w.role == "rna_encoder"} == {
        "bulkformer_37M.pt",
        "G_tcga.pt",
        "G_tcga_weight.pt",
    }
