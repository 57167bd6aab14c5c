"""docs/architecture.md changes with the code: every contract name the code defines is there.

Checked against the code itself (imports, a fresh metrics registry, the settings classes,
the schema models, the checked-in model repository and the error-code literals):
- every topic, model, tensor and S3 object-name constant of histoprompt.core.names;
- every metric the ingest service registers (as exposed, e.g. `_total` for counters) and
  every label value it exports;
- every field of every settings class, as its HISTOPROMPT_* env name;
- every field (wire name) of every message schema in histoprompt.core.schemas, inside
  that schema's own section;
- every parameter key of the checked-in model_repository configs;
- every stable error `code` in the packages' sources.
A failure lists what is missing, and where in the document it belongs.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from histoprompt.client.settings import ClientSettings
from histoprompt.core import names, schemas
from histoprompt.core.settings import ENV_PREFIX, ConnectionSettings
from histoprompt.ingest.metrics import make_metrics
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack.settings import StackSettings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
SETTINGS_CLASSES = (ConnectionSettings, IngestSettings, ClientSettings, StackSettings)
PACKAGES = ("core", "wsi", "serving", "ingest", "client", "export", "stack")
CODE_RE = re.compile(r"""\bcode\s*(?::\s*str\s*)?=\s*["']([a-z][a-z0-9_]*)["']""")


@pytest.fixture(scope="module")
def doc() -> str:
    assert DOC.is_file(), f"{DOC} is missing"
    return DOC.read_text(encoding="utf-8")


def _mentioned(text: str, word: str) -> bool:
    """`word` as a whole token (HISTOPROMPT_INGEST_GROUP does not count inside ..._GROUP_ID)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text) is not None


def _missing(text: str, words: set[str]) -> list[str]:
    return sorted(w for w in words if not _mentioned(text, w))


def _section(text: str, title: str) -> str:
    """The text under the first heading that contains `title`, up to the next heading."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#") and title in line:
            level = len(line) - len(line.lstrip("#"))
            body = []
            for nxt in lines[i + 1 :]:
                if nxt.startswith("#") and len(nxt) - len(nxt.lstrip("#")) <= level:
                    break
                body.append(nxt)
            return "\n".join(body)
    return ""


def _constants(prefix: str) -> dict[str, str]:
    return {k: v for k, v in vars(names).items() if k.startswith(prefix) and isinstance(v, str)}


@pytest.mark.parametrize(
    ("prefix", "section"),
    [
        ("TOPIC_", "3. Kafka topics"),
        ("MODEL_", "5. Triton models"),
        ("TENSOR_", "5. Triton models"),
        ("RESULT_", "Results bucket"),
    ],
)
def test_names_constants_are_documented(doc: str, prefix: str, section: str) -> None:
    consts = _constants(prefix)
    assert consts, f"no {prefix}* constants in histoprompt.core.names"
    body = _section(doc, section)
    assert body, f"docs/architecture.md has no section {section!r}"
    missing = _missing(body, set(consts.values()))
    assert not missing, (
        f"histoprompt.core.names {prefix}* values missing from section {section!r} of "
        f"docs/architecture.md: {missing}"
    )
    # The constant names too, so a reader can find the value in code.
    missing_consts = _missing(body, set(consts))
    assert not missing_consts, (
        f"constants missing from section {section!r} of docs/architecture.md: {missing_consts}"
    )


def test_all_tuples_match_their_constants() -> None:
    """ALL_TOPICS / ALL_MODELS are what the checks above cover."""
    assert set(names.ALL_TOPICS) == set(_constants("TOPIC_").values())
    assert set(names.ALL_MODELS) == set(_constants("MODEL_").values())


def test_series_manifest_name_is_documented(doc: str) -> None:
    body = _section(doc, "Slides bucket")
    assert _mentioned(body, names.SERIES_MANIFEST) and _mentioned(body, "SERIES_MANIFEST")


def _ingest_metrics() -> tuple[set[str], set[str]]:
    """Exposed metric names and exported label values of a fresh ingest registry."""
    registry = CollectorRegistry()
    make_metrics(registry)
    metric_names, label_values = set(), set()
    for family in registry.collect():
        metric_names.add(family.name + "_total" if family.type == "counter" else family.name)
        for sample in family.samples:
            label_values.update(v for k, v in sample.labels.items() if k != "le")
    return metric_names, label_values


def test_ingest_metrics_are_documented(doc: str) -> None:
    metric_names, label_values = _ingest_metrics()
    assert metric_names, "make_metrics registered nothing"
    body = _section(doc, "Ingest service")
    missing = _missing(body, metric_names)
    assert not missing, (
        f"ingest metrics missing from section 'Ingest service' (6. Metrics) of "
        f"docs/architecture.md: {missing}"
    )
    missing_labels = _missing(body, label_values)
    assert not missing_labels, (
        f"ingest metric label values missing from section 'Ingest service': {missing_labels}"
    )


def _env_names(cls: type[ConnectionSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", ENV_PREFIX)
    return {(prefix + field).upper() for field in cls.model_fields}


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda c: c.__name__)
def test_settings_are_documented(doc: str, cls: type[ConnectionSettings]) -> None:
    inherited = _env_names(ConnectionSettings) if cls is not ConnectionSettings else set()
    own = _env_names(cls) - inherited
    assert own, f"{cls.__name__} has no fields of its own"
    body = _section(doc, f"`{cls.__name__}`")
    assert body, f"docs/architecture.md (7. Settings) has no section for `{cls.__name__}`"
    missing = _missing(body, own)
    assert not missing, (
        f"{cls.__name__} settings missing from its section in docs/architecture.md "
        f"(7. Settings): {missing}"
    )


def _schema_models() -> list[type[BaseModel]]:
    return [
        obj
        for name, obj in vars(schemas).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseModel)
        and obj.__module__ == schemas.__name__
        and not name.startswith("_")
    ]


def test_schema_models_are_found() -> None:
    found = {m.__name__ for m in _schema_models()}
    assert {"S3Event", "ResultEvent", "DlqEvent", "SeriesManifest", "ResultManifest"} <= found


@pytest.mark.parametrize("model", _schema_models(), ids=lambda m: m.__name__)
def test_schema_fields_are_documented(doc: str, model: type[BaseModel]) -> None:
    body = _section(doc, f"`{model.__name__}`")
    assert body, (
        f"docs/architecture.md has no section (a heading with `{model.__name__}`) for the "
        "schema histoprompt.core.schemas." + model.__name__
    )
    wire = {f.alias or name for name, f in model.model_fields.items()}
    missing = sorted(w for w in wire if f"`{w}`" not in body)
    assert not missing, (
        f"fields of {model.__name__} missing from its field table in docs/architecture.md: "
        f"{missing}"
    )


def test_model_config_parameters_are_documented(doc: str) -> None:
    keys: set[str] = set()
    for config in sorted((ROOT / "model_repository").glob("*/config.pbtxt")):
        text = config.read_text(encoding="utf-8")
        for block in re.findall(r"parameters\s*\{(.*?)\n\}", text, flags=re.S):
            keys.update(re.findall(r'key:\s*"([^"]+)"', block))
    assert keys, "no parameters found in model_repository/*/config.pbtxt"
    body = _section(doc, "5. Triton models")
    missing = sorted(k for k in keys if f"`{k}`" not in body)
    assert not missing, (
        f"model config parameters missing from section '5. Triton models' of "
        f"docs/architecture.md: {missing}"
    )


def _error_codes() -> dict[str, set[str]]:
    codes: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg / "src").rglob("*.py")):
            for code in CODE_RE.findall(path.read_text(encoding="utf-8")):
                codes.setdefault(code, set()).add(str(path.relative_to(ROOT)))
    return codes


def test_error_codes_are_documented(doc: str) -> None:
    codes = _error_codes()
    assert {"not_dicom", "malformed_event", "no_tissue"} <= set(codes), (
        "the code scan found too little; has the `code=` convention changed?"
    )
    body = _section(doc, "8. Error codes")
    missing = {c: sorted(p) for c, p in codes.items() if f"`{c}`" not in body}
    assert not missing, (
        f"error codes missing from section '8. Error codes' of docs/architecture.md: {missing}"
    )


def test_checks_can_fail() -> None:
    """The helpers report a name that is only a prefix of a documented one as missing."""
    text = "| `HISTOPROMPT_INGEST_GROUP_ID` | x |\n## next\n`b`"
    assert _missing(text, {"HISTOPROMPT_INGEST_GROUP"}) == ["HISTOPROMPT_INGEST_GROUP"]
    assert _section("# a\n`x`\n## b\n`y`\n# c", "a") == "`x`\n## b\n`y`"
    assert _missing(_section("## a\n`x`\n## b\n`y`", "a"), {"y"}) == ["y"]
