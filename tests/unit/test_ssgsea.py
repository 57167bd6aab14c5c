"""ssGSEA: closed form against a literal random walk and against gseapy's ssgsea."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata, spearmanr

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.ssgsea import _ranks, _ranks_at, average_ranks, ssgsea, ssgsea_frame


def _walk_es(x: np.ndarray, members: np.ndarray, alpha: float) -> float:
    """Barbie 2009 random walk, written the slow way (one sample, one set, no ties)."""
    order = np.argsort(-x)
    r = rankdata(x)[order]
    hit = members[order]
    p_hit = np.cumsum(np.where(hit, r**alpha, 0.0)) / np.sum(r[hit] ** alpha)
    p_miss = np.cumsum(~hit) / (~hit).sum()
    return float(np.sum(p_hit - p_miss))


def _synthetic(n: int, g: int, seed: int, ties: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(size=(n, g))
    if ties:  # RNA-seq-like: many exact zeros and rounded values
        x[x < 0.5] = 0.0
        return np.round(np.log1p(x), 2)
    return np.log1p(x)


def test_average_ranks_match_scipy() -> None:
    x = _synthetic(7, 300, 1, ties=True)
    np.testing.assert_array_equal(average_ranks(x), rankdata(x, axis=1))


def test_key_sort_ranks_equal_argsort_ranks() -> None:
    """The fast path (float32 bit keys) against the argsort path: ties, negatives, -0.0."""
    rng = np.random.default_rng(11)
    x = np.round(rng.normal(size=(9, 700)), 1).astype(np.float32)
    x[:, :50] = 0.0
    x[:, 50:60] = -0.0
    x[3] = 1.5  # a row that is one big tie
    cols = np.sort(rng.choice(700, size=120, replace=False))
    fast_r, fast_o = _ranks_at(x, cols)
    slow_r, slow_o = _ranks(x.astype(np.float64))
    np.testing.assert_array_equal(fast_r, slow_r[:, cols])
    np.testing.assert_array_equal(fast_o, slow_o[:, cols])
    no_ties = rng.permutation(700).astype(np.float32)[None, :]
    r, o = _ranks_at(no_ties, np.arange(700))
    np.testing.assert_array_equal(r, o)
    np.testing.assert_array_equal(r[0], no_ties[0] + 1)


def test_key_sort_and_argsort_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    import histoprompt.core.ssgsea as module

    x = _synthetic(8, 500, 12, ties=True).astype(np.float32)
    sets = [np.arange(0, 40), np.arange(100, 300)]
    fast = ssgsea(x, sets)
    monkeypatch.setattr(module, "_float32_exact", lambda _x: None)  # force the argsort path
    slow = ssgsea(x, sets, chunk_size=3)
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    # a float64 matrix that float32 would tie up takes the exact path
    y = np.array([[1.0, 1.0 + 1e-12, 0.5, 0.2, 0.1, 0.3]])
    assert _ranks_at(y, np.arange(6))[0][0, 1] == 6.0


def test_closed_form_equals_random_walk() -> None:
    x = _synthetic(5, 400, 2, ties=False)
    rng = np.random.default_rng(3)
    sets = [rng.choice(400, size=s, replace=False) for s in (5, 40, 150)]
    got = ssgsea(x, sets)
    for k, idx in enumerate(sets):
        members = np.zeros(400, dtype=bool)
        members[idx] = True
        for i in range(5):
            assert got[i, k] == pytest.approx(_walk_es(x[i], members, 0.25), rel=1e-10)


def test_chunking_does_not_change_scores() -> None:
    x = _synthetic(23, 300, 4, ties=True)
    sets = [np.arange(0, 60), np.arange(100, 110)]
    np.testing.assert_allclose(ssgsea(x, sets, chunk_size=4), ssgsea(x, sets), rtol=1e-12)


def test_higher_expression_of_the_set_scores_higher() -> None:
    x = _synthetic(10, 500, 5, ties=False)
    idx = np.arange(20)
    up = x.copy()
    up[:, idx] += 3.0
    assert (ssgsea(up, [idx])[:, 0] > ssgsea(x, [idx])[:, 0]).all()


def test_ties_average_is_column_order_free() -> None:
    x = _synthetic(6, 200, 6, ties=True)
    perm = np.random.default_rng(0).permutation(200)
    idx = np.arange(30)
    inv = np.argsort(perm)
    a = ssgsea(x, [idx], ties="average")
    b = ssgsea(x[:, perm], [inv[idx]], ties="average")
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_nan_and_bad_shapes_are_rejected() -> None:
    x = _synthetic(3, 50, 7, ties=False)
    x[1, 4] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        ssgsea(x, [np.arange(10)])
    with pytest.raises(InvalidInputError, match="2-D"):
        ssgsea(np.zeros(5), [np.arange(2)])
    with pytest.raises(InvalidInputError, match="unique"):
        ssgsea(np.ones((2, 50)), [np.array([1, 1, 2])])
    with pytest.raises(InvalidInputError, match="ties"):
        ssgsea(np.ones((2, 50)), [np.arange(5)], ties="max")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ties", "dtype"), [(False, np.float64), (True, np.float64), (True, np.float32)]
)
def test_matches_gseapy(ties: bool, dtype: type) -> None:
    """Raw scores equal gseapy's `ES` (rtol 1e-9); normalised ones its `NES`.

    gseapy ranks with `sample_norm_method="rank"` (average ranks scaled by 10000/G; the
    scale cancels in the hit weights) and walks a stable ascending sort, which is our
    default `ties="ordinal"`. Its NES for ssGSEA is ES / (max ES - min ES) over the run.
    """
    gseapy = pytest.importorskip("gseapy")
    n, g = 12, 800
    x = _synthetic(n, g, 8, ties=ties).astype(dtype)
    genes = [f"G{i}" for i in range(g)]
    rng = np.random.default_rng(9)
    sets = {
        f"S{k}": [genes[i] for i in rng.choice(g, size=s, replace=False)]
        for k, s in enumerate((8, 30, 90, 200))
    }
    df = pd.DataFrame(x, index=[f"s{i}" for i in range(n)], columns=genes)
    ours = ssgsea_frame(df, sets)
    ours_norm = ssgsea_frame(df, sets, normalize=True)
    res = gseapy.ssgsea(
        data=df.T, gene_sets=sets, min_size=1, max_size=2000, outdir=None, threads=1
    ).res2d
    es = res.pivot(index="Name", columns="Term", values="ES").astype(float)
    nes = res.pivot(index="Name", columns="Term", values="NES").astype(float)
    es, nes = es.loc[ours.index, ours.columns], nes.loc[ours.index, ours.columns]
    np.testing.assert_allclose(ours.to_numpy(), es.to_numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours_norm.to_numpy(), nes.to_numpy(), rtol=1e-9, atol=1e-12)
    for col in ours.columns:
        assert spearmanr(ours[col], es[col])[0] >= 0.999
