"""RNA encoder: gene contract (order, imputation counted), checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histoprompt.export.errors import GeneContractError, WeightsError
from histoprompt.export.rna import (
    GeneContract,
    fit_contract,
    load_rna_encoder,
    save_rna_encoder,
    small_rna_encoder,
)


@pytest.fixture
def contract() -> GeneContract:
    return GeneContract(genes=("A", "B", "C", "D"), impute_means=(1.0, 2.0, 3.0, 4.0))


def test_align_reorders_and_counts_missing_and_extra(contract: GeneContract) -> None:
    values = np.array([[10.0, 20.0, 99.0]])
    out = contract.align(values, ["C", "A", "EXTRA"])
    np.testing.assert_allclose(out.values, [[20.0, 2.0, 10.0, 4.0]])
    assert out.missing_genes == ("B", "D") and out.n_missing == 2
    assert out.n_extra_genes == 1


def test_align_imputes_non_finite_values_and_counts_them(contract: GeneContract) -> None:
    out = contract.align(np.array([[np.nan, 5.0, 6.0, np.inf]]), ["A", "B", "C", "D"])
    np.testing.assert_allclose(out.values, [[1.0, 5.0, 6.0, 4.0]])
    assert out.n_nonfinite_imputed == 2 and out.n_missing == 0


def test_align_applies_log1p_to_tpm(contract: GeneContract) -> None:
    out = contract.align(np.array([[np.e - 1, 0, 0, 0]]), ["A", "B", "C", "D"], is_log1p=False)
    assert out.values[0, 0] == pytest.approx(1.0)
    with pytest.raises(GeneContractError, match="non-negative"):
        contract.align(np.array([[-1.0, 0, 0, 0]]), ["A", "B", "C", "D"], is_log1p=False)


def test_align_rejects_mismatched_names(contract: GeneContract) -> None:
    with pytest.raises(GeneContractError, match="gene names"):
        contract.align(np.zeros((1, 3)), ["A", "B"])
    with pytest.raises(GeneContractError, match="duplicates"):
        contract.align(np.zeros((1, 2)), ["A", "A"])


def test_checkpoint_round_trip_keeps_outputs_and_contract(tmp_path: Path) -> None:
    genes = [f"G{i}" for i in range(30)]
    contract = fit_contract(genes, np.random.default_rng(0).uniform(0, 5, (10, 30)))
    enc = small_rna_encoder(contract, seed=5, embed_dim=16)
    save_rna_encoder(enc, tmp_path / "rna")
    loaded = load_rna_encoder(tmp_path / "rna")
    x = torch.rand(3, 30) * 5
    with torch.no_grad():
        assert torch.allclose(enc(x), loaded(x))
    assert loaded.contract == contract
    assert loaded(x).shape == (3, 16)


def test_broken_checkpoints_are_reported(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="missing rna_encoder.json"):
        load_rna_encoder(tmp_path)
    contract = fit_contract(["A", "B"], np.ones((2, 2)))
    save_rna_encoder(small_rna_encoder(contract), tmp_path / "x")
    (tmp_path / "x" / "gene_contract.json").write_text(
        GeneContract(genes=("A", "B", "C"), impute_means=(0, 0, 0)).model_dump_json()
    )
    with pytest.raises(WeightsError, match="expects 2 genes"):
        load_rna_encoder(tmp_path / "x")


def test_contract_with_ids_maps_expression_keyed_by_symbols() -> None:
    ids = GeneContract(
        genes=("ENSG01", "ENSG02", "ENSG03"),
        impute_means=(-10.0, -10.0, -10.0),
        symbols=("TP53", "MYC", "MYC"),
    )
    assert ids.names == ("TP53", "ENSG02", "ENSG03")  # a duplicated symbol keeps the id
    out = ids.align(np.array([[1.0, 2.0, 9.0]]), ["tp53", "ENSG03", "OTHER"])
    np.testing.assert_array_equal(out.values, [[1.0, -10.0, 2.0]])
    assert out.missing_genes == ("ENSG02",) and out.n_extra_genes == 1
    with pytest.raises(ValueError, match="one entry per gene"):
        GeneContract(genes=("A", "B"), impute_means=(0.0, 0.0), symbols=("X",))
