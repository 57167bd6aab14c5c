"""Property tests of every wire schema in histoprompt.core.schemas (hypothesis): a valid
model survives model_dump_json -> model_validate_json unchanged, and invalid input (a field
dropped or of the wrong type, arbitrary bytes) raises pydantic's ValidationError and nothing
else. Strategies are built from each model's own fields and constraints, so a field added
later is covered without editing this file."""

from __future__ import annotations

import inspect
import json
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import annotated_types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from histoprompt.core import schemas

# ~20 models: a few examples each keeps the file at a few seconds.
FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MODELS = sorted(
    (
        obj
        for obj in vars(schemas).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseModel)
        and obj.__module__ == schemas.__name__
        and not obj.__name__.startswith("_")
    ),
    key=lambda m: m.__name__,
)
TEXT = st.text(max_size=30)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def _bounds(metadata: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            out["min_value"] = int(m.ge)
        elif isinstance(m, annotated_types.Gt):
            out["min_value"] = int(m.gt) + 1
        elif isinstance(m, annotated_types.Le):
            out["max_value"] = int(m.le)
        elif isinstance(m, annotated_types.MinLen):
            out["min_size"] = int(m.min_length)
    return out


def strategy_for(tp: Any, metadata: list[Any] | None = None) -> st.SearchStrategy[Any]:
    """Values of annotation `tp` as JSON-ready Python (models as dicts by field name)."""
    bounds = _bounds(metadata or [])
    origin = get_origin(tp)
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if origin in (Union, types.UnionType):
        return st.one_of([strategy_for(a) for a in get_args(tp)])
    if origin is list:
        return st.lists(strategy_for(get_args(tp)[0]), max_size=3, **bounds)
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return model_dicts(tp)
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(bounds.get("min_value", -(2**53)), bounds.get("max_value", 2**53))
    if tp is float:
        # NaN and infinities are written as JSON null by pydantic and do not read back.
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp is str:
        return TEXT
    if tp is Any:
        return JSON_VALUE
    raise NotImplementedError(f"no strategy for {tp!r}: add one here")


def model_dicts(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    required, optional = {}, {}
    hints = get_type_hints(model)  # resolves forward references (DlqSlide -> SeriesReady)
    for name, field in model.model_fields.items():
        strat = strategy_for(hints.get(name, field.annotation), field.metadata)
        (required if field.is_required() else optional)[name] = strat
    return st.fixed_dictionaries(required, optional=optional)


def test_every_schema_is_covered() -> None:
    names = {m.__name__ for m in MODELS}
    assert {"S3Event", "ResultEvent", "DlqEvent", "ResultManifest", "SeriesReady"} <= names


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FAST
@given(data=st.data())
def test_json_round_trip_is_identity(model: type[BaseModel], data: st.DataObject) -> None:
    obj = model.model_validate(data.draw(model_dicts(model)))
    wire = obj.model_dump_json(by_alias=True)
    assert model.model_validate_json(wire) == obj
    assert model.model_validate_json(wire).model_dump_json(by_alias=True) == wire


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FAST
@given(data=st.data())
def test_invalid_input_raises_only_validation_error(
    model: type[BaseModel], data: st.DataObject
) -> None:
    value = json.loads(model.model_validate(data.draw(model_dicts(model))).model_dump_json())
    required = [n for n, f in model.model_fields.items() if f.is_required()]
    if required and data.draw(st.booleans()):
        del value[data.draw(st.sampled_from(required))]
    elif value:
        value[data.draw(st.sampled_from(sorted(value)))] = data.draw(JSON_VALUE)
    _valid_or_validation_error(model, json.dumps(value))


@settings(max_examples=100, deadline=None)
@given(model=st.sampled_from(MODELS), raw=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_validation_error(model: type[BaseModel], raw: bytes) -> None:
    _valid_or_validation_error(model, raw)


def _valid_or_validation_error(model: type[BaseModel], raw: str | bytes) -> None:
    """Any other exception type fails the test; so does a ValidationError with no errors."""
    try:
        obj = model.model_validate_json(raw)
    except ValidationError as err:
        assert err.error_count() >= 1 and err.title == model.__name__
        return
    assert isinstance(obj, model)
