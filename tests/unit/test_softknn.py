"""Soft-kNN over a SYNTHETIC reference: neighbours, weights, open-vocabulary LRU."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.synthetic_reference import synthetic_reference
from scipy.stats import spearmanr

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.genesets import load_hallmark, parse_gene_list
from histoprompt.core.reference import ReferenceDB
from histoprompt.core.softknn import ScoreCache, SoftKnn, SoftKnnConfig
from histoprompt.core.ssgsea import ssgsea


@pytest.fixture(scope="module")
def ref() -> ReferenceDB:
    return synthetic_reference(400, n_genes=2000, seed=2, embed_dim=24, name="knn")


def test_neighbours_are_the_most_similar_and_weights_sum_to_one(ref: ReferenceDB) -> None:
    knn = SoftKnn(ref, SoftKnnConfig(k=5, temperature=0.1))
    idx, w = knn.neighbours(ref.embeddings[:3] * 7.0)  # scale must not matter (cosine)
    assert idx.shape == (3, 5)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    for row in range(3):
        assert row in idx[row]  # a reference sample is its own nearest neighbour
        assert w[row, list(idx[row]).index(row)] == w[row].max()


def test_low_temperature_approaches_nearest_neighbour(ref: ReferenceDB) -> None:
    hallmark = load_hallmark()
    knn = SoftKnn(ref, SoftKnnConfig(k=10, temperature=1e-4), hallmark=hallmark)
    name = ref.hallmark_scores.columns[0]
    resolved = ref.gene_index.resolve(hallmark[name])
    pred = knn.predict(ref.embeddings[:20], [resolved])[:, 0]
    np.testing.assert_allclose(pred, ref.hallmark_scores[name].to_numpy()[:20], rtol=1e-4)


def test_predictions_track_the_truth_for_noisy_queries(ref: ReferenceDB) -> None:
    hallmark = load_hallmark()
    knn = SoftKnn(ref, SoftKnnConfig(k=16, temperature=0.05), hallmark=hallmark)
    rng = np.random.default_rng(0)
    q = ref.embeddings[:100] + 0.05 * rng.normal(size=(100, ref.embed_dim)).astype(np.float32)
    name = "HALLMARK_HYPOXIA"
    pred = knn.predict(q, [ref.gene_index.resolve(hallmark[name])])[:, 0]
    rho = spearmanr(pred, ref.hallmark_scores[name].to_numpy()[:100])[0]
    assert rho > 0.5


def test_new_gene_set_is_computed_once_then_cached(ref: ReferenceDB) -> None:
    knn = SoftKnn(ref, SoftKnnConfig(cache_size=2), hallmark=load_hallmark())
    genes = list(ref.genes[100:130])
    resolved = ref.gene_index.resolve(parse_gene_list(",".join(genes)))
    assert not knn.is_cached(resolved)
    first = knn.reference_scores(resolved)
    assert knn.is_cached(resolved) and knn.cache.misses == 1
    again = knn.reference_scores(resolved)
    assert knn.cache.hits == 1 and again is first
    # the on-demand scores are ssGSEA of the stored expression
    np.testing.assert_allclose(first, ssgsea(ref.expression, [resolved.indices])[:, 0], rtol=1e-5)
    # a renamed or reordered copy of the same genes shares the cache entry
    same = ref.gene_index.resolve(parse_gene_list(",".join(reversed(genes)), name="other"))
    assert knn.is_cached(same)


def test_hallmark_name_with_other_genes_is_not_taken_from_the_table(ref: ReferenceDB) -> None:
    knn = SoftKnn(ref, hallmark=load_hallmark())
    fake = parse_gene_list(
        '{"name": "HALLMARK_HYPOXIA", "genes": ' + str(list(ref.genes[:20])).replace("'", '"') + "}"
    )
    scores = knn.reference_scores(ref.gene_index.resolve(fake))
    assert not np.allclose(scores, ref.hallmark_scores["HALLMARK_HYPOXIA"].to_numpy())


def test_lru_evicts_the_least_recent() -> None:
    cache = ScoreCache(2)
    for key in ("a", "b"):
        cache.put(key, np.zeros(1))
    assert cache.get("a") is not None
    cache.put("c", np.zeros(1))
    assert "b" not in cache and "a" in cache and "c" in cache


def test_bad_embeddings(ref: ReferenceDB) -> None:
    knn = SoftKnn(ref)
    with pytest.raises(InvalidInputError, match="width 3"):
        knn.neighbours(np.ones((2, 3), np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        knn.neighbours(np.full((1, ref.embed_dim), np.nan, np.float32))
    with pytest.raises(InvalidInputError, match="all zeros"):
        knn.neighbours(np.zeros((1, ref.embed_dim), np.float32))
