"""Unknown HISTOPROMPT_* variables are a ConfigError naming the closest valid setting.

Several parts share the prefix and one stack.env, so a class rejects unknown names at top
level and in its own namespaces and leaves other components' namespaces to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from histoprompt.client.settings import ClientSettings, load_settings
from histoprompt.core.errors import ConfigError
from histoprompt.core.settings import TOP_LEVEL_NAMES, ConnectionSettings
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack.launcher import connection_env
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import StackSettings

pytestmark = pytest.mark.usefixtures("clean_histoprompt_env")

ALL_CLASSES = (ConnectionSettings, IngestSettings, ClientSettings, StackSettings)


def test_typo_in_own_namespace_names_the_closest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTOPROMPT_INGEST_BACH_SIZE", "16")
    with pytest.raises(ConfigError) as err:
        IngestSettings.load()
    assert str(err.value).startswith(
        "HISTOPROMPT_INGEST_BACH_SIZE is not a setting; did you mean HISTOPROMPT_INGEST_BATCH_SIZE?"
    )
    assert "the environment" in str(err.value)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_top_level_typo_is_rejected_by_every_class(
    cls: type[ConnectionSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HISTOPROMPT_S3_ENDPIONT", "host:1")
    with pytest.raises(ConfigError, match="did you mean HISTOPROMPT_S3_ENDPOINT\\?"):
        cls()


def test_client_top_level_typo_suggests_the_client_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HISTOPROMPT_WAIT_TIMEUOT", "5")
    with pytest.raises(ConfigError, match="did you mean HISTOPROMPT_WAIT_TIMEOUT\\?"):
        load_settings()


def test_stack_namespace_typo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTOPROMPT_STACK_SERVICE", '["kafka"]')
    with pytest.raises(ConfigError, match="did you mean HISTOPROMPT_STACK_SERVICES\\?"):
        StackSettings()


def test_several_unknown_names_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTOPROMPT_INGEST_CONCURENCY", "2")
    monkeypatch.setenv("HISTOPROMPT_TRITON_URLS", "x:1")
    with pytest.raises(ConfigError) as err:
        IngestSettings()
    assert "HISTOPROMPT_INGEST_CONCURENCY" in str(err.value)
    assert "HISTOPROMPT_TRITON_URLS" in str(err.value)


def test_client_accepts_other_components_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTOPROMPT_INGEST_BATCH_SIZE", "8")
    monkeypatch.setenv("HISTOPROMPT_INGEST_GROUP_ID", "g")
    monkeypatch.setenv("HISTOPROMPT_STACK_SERVICES", '["kafka"]')
    monkeypatch.setenv("HISTOPROMPT_EXPORT_SOMETHING_NEW", "1")
    monkeypatch.setenv("HISTOPROMPT_TRITON_URL", "t:1")
    assert load_settings().triton_url == "t:1"


def test_other_namespaces_are_left_to_their_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    # Even with ingest imported, the client does not judge ingest's names: the result must
    # not depend on which packages a process happens to import.
    monkeypatch.setenv("HISTOPROMPT_INGEST_BACH_SIZE", "8")
    assert ClientSettings().wait_timeout > 0
    with pytest.raises(ConfigError):
        IngestSettings()


@pytest.mark.parametrize("cls", (IngestSettings, StackSettings, ConnectionSettings))
def test_client_and_process_variables_are_accepted_elsewhere(
    cls: type[ConnectionSettings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HISTOPROMPT_WAIT_TIMEOUT", "5")
    monkeypatch.setenv("HISTOPROMPT_REFERENCE_NAME", "ref")
    monkeypatch.setenv("HISTOPROMPT_INGEST_GROUP_ID", "g")
    monkeypatch.setenv("HISTOPROMPT_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("HISTOPROMPT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HISTOPROMPT_STACK_OPTIONAL", "1")
    monkeypatch.setenv("HISTOPROMPT_INGEST_METRICS_PORT", "0")
    env_file = tmp_path / "stack.env"
    env_file.write_text("HISTOPROMPT_S3_REGION=eu\n")
    monkeypatch.setenv("HISTOPROMPT_ENV_FILE", str(env_file))
    assert cls.load().s3_region == "eu"


def test_env_file_typo_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / "stack.env"
    env_file.write_text("HISTOPROMPT_S3_ENDPOINT=h:1\nHISTOPROMPT_INGEST_MAX_INFLIHGT=2\n")
    with pytest.raises(ConfigError) as err:
        IngestSettings.load(env_file)
    message = str(err.value)
    assert "HISTOPROMPT_INGEST_MAX_INFLIHGT is not a setting" in message
    assert "did you mean HISTOPROMPT_INGEST_MAX_INFLIGHT?" in message
    assert str(env_file) in message
    # The client does not own the ingest namespace, so the same file is fine for it.
    assert load_settings(env_file=env_file).s3_endpoint == "h:1"


def test_env_file_top_level_typo_fails_the_client(tmp_path: Path) -> None:
    env_file = tmp_path / "stack.env"
    env_file.write_text("HISTOPROMPT_SLIDES_BUKET=b\n")
    with pytest.raises(ConfigError, match="did you mean HISTOPROMPT_SLIDES_BUCKET\\?"):
        load_settings(env_file=env_file)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_the_stack_env_file_is_valid_for_every_part(
    cls: type[ConnectionSettings], tmp_path: Path
) -> None:
    ports = StackPorts(**{name: 20000 + i for i, name in enumerate(StackPorts.model_fields)})
    env = connection_env(StackSettings(), ports, tmp_path, tmp_path / "repo")
    env_file = tmp_path / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    assert cls.load(env_file).s3_endpoint == f"127.0.0.1:{ports.s3}"


def test_client_fields_are_all_known_to_core() -> None:
    # The top-level list in core must follow ClientSettings, or an ingest process would
    # reject a client variable it cannot see.
    client_only = ClientSettings.env_names() - ConnectionSettings.env_names()
    top_level = {n for n in client_only if not n.startswith("INGEST_")}
    assert top_level <= TOP_LEVEL_NAMES


def test_a_field_outside_the_namespaces_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="outside its env_namespaces"):

        class Stray(ConnectionSettings):
            env_namespaces: ClassVar[tuple[str, ...]] = ("EXPORT_",)
            export_ok: int = 1
            stray_knob: int = 2

    with pytest.raises(TypeError, match="COMPONENT_NAMESPACES"):

        class Unlisted(ConnectionSettings):
            env_namespaces: ClassVar[tuple[str, ...]] = ("NEWPART_",)
            newpart_knob: int = 1
