"""Property tests (hypothesis) of user input: GMT text, gene lists and the settings classes.

- GMT: what format_gmt writes, parse_gmt reads back as the same sets, and format_gmt refuses
  what could not be read back; any text parses to gene sets or raises GmtFormatError.
- Gene lists and queries: any text is a normalised GeneSet or a GeneSetError /
  UnknownGeneSetError, never another exception.
- Settings: an unknown variable in a component's namespace (HISTOPROMPT_INGEST_*,
  _CLIENT_*, _STACK_*) is a ConfigError naming it; a bounded
  integer is accepted exactly inside its bounds; a value that is not a number is a
  ValidationError.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import annotated_types
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from histoprompt.client.settings import ClientSettings
from histoprompt.core.errors import ConfigError, HistopromptError, InvalidInputError, NotFoundError
from histoprompt.core.genesets import (
    GeneSetCollection,
    load_hallmark,
    normalise_symbols,
    parse_gene_list,
    parse_query,
)
from histoprompt.core.gmt import GeneSet, GmtFormatError, format_gmt, parse_gmt
from histoprompt.core.settings import ConnectionSettings, known_names
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack.settings import StackSettings

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HALLMARK = load_hallmark()

SYMBOL = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Nd")), min_size=1, max_size=8)
FIELD = st.text(max_size=20)


@FAST
@given(
    sets=st.lists(
        st.builds(
            GeneSet,
            name=st.text(min_size=1, max_size=20),
            genes=st.lists(FIELD, min_size=1, max_size=6).map(tuple),
            description=FIELD,
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda g: g.name,
    )
)
def test_gmt_round_trips_or_is_refused_when_written(sets: list[GeneSet]) -> None:
    try:
        text = format_gmt(sets)
    except GmtFormatError:
        return
    assert parse_gmt(text) == {gs.name: gs for gs in sets}


@FAST
@given(text=st.text(max_size=300))
def test_any_text_is_gene_sets_or_a_gmt_error(text: str) -> None:
    try:
        sets = parse_gmt(text)
    except GmtFormatError:
        return
    assert sets and all(gs.name and gs.genes for gs in sets.values())


@FAST
@given(text=st.text(max_size=200) | st.lists(SYMBOL, max_size=5).map(", ".join))
def test_any_gene_list_is_a_gene_set_or_a_gene_set_error(text: str) -> None:
    try:
        gs = parse_gene_list(text)
    except InvalidInputError:
        return
    assert gs.genes == normalise_symbols(gs.genes) and gs.genes


@FAST
@given(text=st.text(max_size=60) | st.sampled_from(sorted(HALLMARK)).map(str.lower))
def test_any_query_resolves_or_raises_a_project_error(text: str) -> None:
    try:
        gs = parse_query(text, HALLMARK)
    except (InvalidInputError, NotFoundError) as err:
        assert isinstance(err, HistopromptError)
        return
    assert gs.genes


def test_deeply_nested_json_gene_list_is_a_gene_set_error() -> None:
    """json.loads raises RecursionError past ~1,000 levels: still the project's error."""
    with pytest.raises(InvalidInputError):
        parse_gene_list("[" * 100_000 + "]" * 100_000)


@FAST
@given(sets=st.dictionaries(SYMBOL, st.lists(SYMBOL, min_size=1, max_size=5), min_size=1))
def test_collection_lookup_is_case_insensitive(sets: dict[str, list[str]]) -> None:
    coll = GeneSetCollection({n: GeneSet(n, tuple(g)) for n, g in sets.items()}, "test")
    for name in sets:
        assert coll.lookup(name.lower()).genes == normalise_symbols(sets[name])


@contextmanager
def _env(**values: str) -> Iterator[None]:
    """Only these HISTOPROMPT_* variables for the block (hypothesis runs many examples in
    one test, so pytest's per-test monkeypatch does not fit)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("HISTOPROMPT_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(values)
    try:
        yield
    finally:
        for k in values:
            os.environ.pop(k, None)
        os.environ.update(saved)


SETTINGS_CLASSES = [IngestSettings, ClientSettings, StackSettings]


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=30, deadline=None)
@given(suffix=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=20))
def test_unknown_variables_in_a_components_namespace_are_config_errors(
    cls: type[ConnectionSettings], suffix: str
) -> None:
    (namespace,) = cls.env_namespaces
    name = f"HISTOPROMPT_{namespace}{suffix}"
    assume(name.removeprefix("HISTOPROMPT_") not in known_names())
    with _env(**{name: "1"}), pytest.raises(ConfigError) as info:
        cls(_env_file=None)  # type: ignore[call-arg]
    assert name in str(info.value)


BOUNDED = {
    name: {type(m): m for m in field.metadata}
    for name, field in IngestSettings.model_fields.items()
    if field.annotation is int
    and any(isinstance(m, annotated_types.Ge | annotated_types.Gt) for m in field.metadata)
}


def _inside(bounds: dict[type, object], value: int) -> bool:
    checks = {
        annotated_types.Ge: lambda m: value >= m.ge,
        annotated_types.Gt: lambda m: value > m.gt,
        annotated_types.Le: lambda m: value <= m.le,
        annotated_types.Lt: lambda m: value < m.lt,
    }
    return all(checks[t](m) for t, m in bounds.items() if t in checks)


def test_some_integer_settings_are_bounded() -> None:
    assert {"ingest_concurrency", "ingest_max_attempts", "ingest_metrics_port"} <= set(BOUNDED)


@FAST
@given(
    name=st.sampled_from(sorted(BOUNDED)), value=st.integers(-(2**40), 2**40) | st.integers(-3, 70)
)
def test_bounded_integers_are_accepted_exactly_inside_their_bounds(name: str, value: int) -> None:
    with _env(**{f"HISTOPROMPT_{name.upper()}": str(value)}):
        try:
            got = IngestSettings(_env_file=None)  # type: ignore[call-arg]
        except ValidationError:
            assert not _inside(BOUNDED[name], value)
            return
    assert _inside(BOUNDED[name], value)
    assert getattr(got, name) == value


@FAST
@given(name=st.sampled_from(sorted(BOUNDED)), text=st.text(max_size=10))
def test_non_numbers_are_validation_errors(name: str, text: str) -> None:
    assume("\x00" not in text)  # the environment cannot hold NUL
    assume(not text.strip().lstrip("+-").replace("_", "").isdigit())
    with _env(**{f"HISTOPROMPT_{name.upper()}": text}), pytest.raises(ValidationError):
        IngestSettings(_env_file=None)  # type: ignore[call-arg]
