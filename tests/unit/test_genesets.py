"""Gene sets: GMT round trip, bundled Hallmarks, query parsing, normalisation, coverage."""

from __future__ import annotations

from pathlib import Path

import pytest

from histoprompt.core.errors import InvalidInputError, NotFoundError
from histoprompt.core.genesets import (
    MAX_GENES,
    GeneIndex,
    GeneSetSizeError,
    LowCoverageError,
    MalformedGeneSetError,
    UnknownGeneSetError,
    gene_set_key,
    load_hallmark,
    normalise_symbols,
    parse_gene_list,
    parse_query,
)
from histoprompt.core.gmt import GeneSet, GmtFormatError, parse_gmt, read_gmt, write_gmt


def test_hallmark_is_bundled_with_attribution() -> None:
    from importlib import resources

    hallmark = load_hallmark()
    assert len(hallmark) == 50
    assert all(32 <= len(s) <= 200 for s in hallmark.values())
    assert "MKI67" not in hallmark["HALLMARK_HYPOXIA"].genes
    assert "PGK1" in hallmark["HALLMARK_HYPOXIA"].genes
    readme = resources.files("histoprompt.core.data").joinpath("README.md").read_text()
    assert "Creative Commons Attribution 4.0" in readme and "Liberzon" in readme


def test_gmt_round_trip(tmp_path: Path) -> None:
    sets = [GeneSet("A", ("X1", "X2"), "desc a"), GeneSet("B", ("Y",), "http://b")]
    path = write_gmt(sets, tmp_path / "s.gmt")
    back = read_gmt(path)
    assert list(back) == ["A", "B"]
    assert back["A"].genes == ("X1", "X2") and back["B"].description == "http://b"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("A\tdesc\n", "has no genes"),
        ("\tdesc\tG1\n", "no name"),
        ("A\td\tG1\nA\td\tG2\n", "appears twice"),
        ("\n\n", "no gene sets"),
    ],
)
def test_gmt_errors_name_the_line(text: str, fragment: str) -> None:
    with pytest.raises(GmtFormatError, match=fragment):
        parse_gmt(text, source="user.gmt")


def test_missing_gmt_file(tmp_path: Path) -> None:
    with pytest.raises(GmtFormatError, match="does not exist"):
        read_gmt(tmp_path / "nope.gmt")


def test_normalise_symbols() -> None:
    assert normalise_symbols([" cd3e", "CD3E", "gzmb ", "", "Prf1"]) == ("CD3E", "GZMB", "PRF1")


def test_lookup_is_case_insensitive_and_prefix_optional() -> None:
    h = load_hallmark()
    assert h.lookup("e2f_targets").name == "HALLMARK_E2F_TARGETS"
    assert h.lookup("hallmark_hypoxia").name == "HALLMARK_HYPOXIA"


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownGeneSetError) as info:
        load_hallmark().lookup("HALLMARK_HYPOXA")
    assert isinstance(info.value, NotFoundError)
    assert info.value.suggestions[0] == "HALLMARK_HYPOXIA"
    assert "did you mean HALLMARK_HYPOXIA" in str(info.value)


def test_parse_comma_list_and_json() -> None:
    gs = parse_gene_list("cd3e, CD8A,gzmb,,PRF1 ,ifng")
    assert gs.genes == ("CD3E", "CD8A", "GZMB", "PRF1", "IFNG")
    js = parse_gene_list('{"name": "tcell", "genes": ["cd3e", "CD3E", "Cd8a"]}')
    assert js.name == "tcell" and js.genes == ("CD3E", "CD8A")
    assert parse_gene_list('["a","b"]').genes == ("A", "B")


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "x", "genes": ["A", ',
        '{"name": "x"}',
        '{"name": "x", "genes": "A,B"}',
        '{"name": "x", "genes": [1, 2]}',
        '{"name": "", "genes": ["A"]}',
        '{"name": "x", "genes": ["A"], "colour": 1}',
    ],
)
def test_malformed_json_is_invalid_input(text: str) -> None:
    with pytest.raises(MalformedGeneSetError) as info:
        parse_gene_list(text)
    assert isinstance(info.value, InvalidInputError)


def test_empty_and_oversized_sets() -> None:
    with pytest.raises(GeneSetSizeError, match="empty"):
        parse_gene_list('{"name": "e", "genes": []}')
    with pytest.raises(GeneSetSizeError, match="empty"):
        parse_query("   ", load_hallmark())
    big = ",".join(f"G{i}" for i in range(MAX_GENES + 1))
    with pytest.raises(GeneSetSizeError, match=f"at most {MAX_GENES}"):
        parse_gene_list(big)


def test_query_dispatch() -> None:
    h = load_hallmark()
    assert parse_query("HALLMARK_APOPTOSIS", h).name == "HALLMARK_APOPTOSIS"
    assert parse_query("A,B,C", h).genes == ("A", "B", "C")
    assert parse_query('{"name": "j", "genes": ["a"]}', h).name == "j"


def test_coverage_and_resolution() -> None:
    index = GeneIndex(["cd3e", "CD8A", "GZMB", "PRF1", "IFNG", "ACTB"])
    gs = parse_gene_list("IFNG,CD3E,CD8A,GZMB,PRF1,FOO,BAR")
    resolved = index.resolve(gs)
    assert resolved.coverage.found == 5 and resolved.coverage.total == 7
    assert resolved.coverage.unknown == ("FOO", "BAR")
    assert resolved.coverage.fraction == pytest.approx(5 / 7)
    assert resolved.indices.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(LowCoverageError, match="only 4 of 6"):
        index.resolve(parse_gene_list("CD3E,CD8A,GZMB,PRF1,FOO,BAR"))


def test_reference_with_duplicate_genes_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="duplicate"):
        GeneIndex(["A", "a", "B"])


def test_gene_set_key_ignores_order_case_and_name() -> None:
    assert gene_set_key(["b", "A", "a"]) == gene_set_key(["A", "B"])
    assert gene_set_key(["A", "B"]) != gene_set_key(["A", "C"])
