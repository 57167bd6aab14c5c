"""Connection settings shared by every part, read from env `HISTOPROMPT_*` and `stack.env`.

Each part (ingest, client, export, stack) subclasses `ConnectionSettings` with its own
fields; instances are immutable and passed in, never global.

Precedence: init arguments > environment > env file > defaults. The env file is
`$HISTOPROMPT_ENV_FILE` if set, else `./stack.env` if it exists.

Unknown variables. A mistyped `HISTOPROMPT_*` variable (in the environment or the env
file) is a ConfigError naming the closest valid name, never silently ignored. Several
parts share the prefix and one env file, and a process imports only some of them, so
the names are split up:

- top-level names (`HISTOPROMPT_<NAME>` under no component namespace) are all known to
  core: the ConnectionSettings fields plus `TOP_LEVEL_NAMES`. Every class rejects an
  unknown top-level name.
- a component namespace (`COMPONENT_NAMESPACES`: `HISTOPROMPT_INGEST_*`,
  `HISTOPROMPT_STACK_*`, ...) belongs to the settings class that declares it in
  `env_namespaces`. That class rejects an unknown name in its namespaces; every other
  class leaves the namespace alone, since its owner may not be imported here.

So whether a variable is accepted never depends on which packages a process imported.
A subclass field must live in one of its own namespaces or be listed in
`TOP_LEVEL_NAMES` (checked when the class is defined); new fields go into a namespace.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from histoprompt.core.errors import ConfigError

ENV_PREFIX = "HISTOPROMPT_"
ENV_FILE_VAR = "HISTOPROMPT_ENV_FILE"
DEFAULT_ENV_FILE = "stack.env"

S = TypeVar("S", bound="ConnectionSettings")

# Namespaces (after HISTOPROMPT_) that a component's settings class owns. Listed here,
# not only on the classes, so a process without that component still knows to skip them.
COMPONENT_NAMESPACES: frozenset[str] = frozenset(
    {"INGEST_", "STACK_", "CLIENT_", "EXPORT_", "SERVING_"}
)

# Valid top-level names (after HISTOPROMPT_) besides the ConnectionSettings fields:
# variables read directly from os.environ, and fields that predate the namespaces (renaming
# them would break users' environments).
TOP_LEVEL_NAMES: frozenset[str] = frozenset(
    {
        "ENV_FILE",  # core: which env file to read
        "CONFIG",  # client: TOML config file
        "CACHE_DIR",  # export: model bundle cache
        # ClientSettings fields
        "PUBLISH_EVENTS",
        "GENE_SETS_GMT",
        "UPLOAD_PREFIX",
        "PART_SIZE_MIB",
        "WAIT_TIMEOUT",
        "CONNECT_TIMEOUT",
        "REFERENCE_NAME",
    }
)

# Names inside a namespace that another component also reads, so the namespace's owner
# must accept them even though they are not its fields.
SHARED_NAMESPACED_NAMES: frozenset[str] = frozenset(
    {
        "INGEST_GROUP_ID",  # ClientSettings: the consumer group whose lag `status` shows
        "INGEST_METRICS_PORT",  # StackSettings: port Prometheus scrapes for ingest
        "STACK_OPTIONAL",  # tests/conftest.py: skip instead of fail without a stack
    }
)

# Every env name (after HISTOPROMPT_) of every settings class imported in this process:
# the candidates for "did you mean", which is better the more classes are known.
_REGISTERED: set[str] = set()


def _namespace_of(name: str) -> str | None:
    return next((ns for ns in COMPONENT_NAMESPACES if name.startswith(ns)), None)


def known_names() -> frozenset[str]:
    """Every valid name after HISTOPROMPT_ that this process knows of."""
    return frozenset(_REGISTERED | TOP_LEVEL_NAMES | SHARED_NAMESPACED_NAMES)


def unknown_setting_errors(
    names: Iterable[str], namespaces: Iterable[str], accepted: Iterable[str]
) -> list[str]:
    """Why each of `names` (full `HISTOPROMPT_*` variables) is not a setting; [] if all are.

    `namespaces` are the ones the checking class owns; `accepted` its own names (after the
    prefix). Names in other components' namespaces are left to their owners.
    """
    own = set(namespaces)
    valid = set(accepted) | TOP_LEVEL_NAMES | SHARED_NAMESPACED_NAMES
    candidates = sorted(known_names() | valid)
    problems = []
    for full in sorted(set(names)):
        name = full.upper().removeprefix(ENV_PREFIX)
        namespace = _namespace_of(name)
        if name in valid or (namespace is not None and namespace not in own):
            continue
        close = difflib.get_close_matches(name, candidates, n=1)
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        problems.append(f"{ENV_PREFIX}{name} is not a setting{hint}")
    return problems


def default_env_file() -> Path | None:
    """The env file settings read: `$HISTOPROMPT_ENV_FILE`, else `./stack.env` when present."""
    explicit = os.environ.get(ENV_FILE_VAR)
    if explicit:
        return Path(explicit)
    local = Path(DEFAULT_ENV_FILE)
    return local if local.is_file() else None


class ConnectionSettings(BaseSettings):
    """Where the backing services are. Field names map to `HISTOPROMPT_<NAME>`.

    Subclasses set `env_namespaces` to the COMPONENT_NAMESPACES they own (see the module
    docstring for which unknown variables a class rejects).
    """

    # Unknown HISTOPROMPT_* variables are rejected by settings_customise_sources, which
    # knows which of them belong to other components; "forbid" would reject those too.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", env_file_encoding="utf-8"
    )

    env_namespaces: ClassVar[tuple[str, ...]] = ()

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_security_protocol: str = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: str | None = Field(None, description="e.g. SCRAM-SHA-512")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(
        None, description="CA bundle (PEM) that signs the brokers' certificates"
    )

    s3_endpoint: str = Field("127.0.0.1:8333", description="S3 endpoint host:port")
    s3_access_key: SecretStr = Field(SecretStr("histoprompt"), description="S3 access key")
    s3_secret_key: SecretStr = Field(SecretStr("histoprompt-secret"), description="S3 secret")
    s3_secure: bool = Field(False, description="use https for S3")
    s3_ca_file: str | None = Field(
        None, description="CA bundle (PEM) that signs the S3 endpoint's certificate"
    )
    s3_region: str = "us-east-1"
    slides_bucket: str = "histoprompt-slides"
    results_bucket: str = "histoprompt-results"
    models_bucket: str = "histoprompt-models"

    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC host:port")
    triton_ssl: bool = Field(False, description="gRPC over TLS to Triton")
    triton_ssl_root_cert: str | None = Field(
        None, description="CA bundle (PEM) that signs Triton's gRPC certificate"
    )
    triton_http_url: str = Field("127.0.0.1:8000", description="Triton HTTP host:port")
    triton_metrics_url: str = Field("http://127.0.0.1:8002/metrics")
    prometheus_url: str = Field("http://127.0.0.1:9090", description="Prometheus base URL")

    @classmethod
    def env_names(cls) -> frozenset[str]:
        """This class's field names as env names, without the HISTOPROMPT_ prefix."""
        return frozenset(name.upper() for name in cls.model_fields)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        foreign = set(cls.env_namespaces) - COMPONENT_NAMESPACES
        if foreign:
            raise TypeError(
                f"{cls.__name__}.env_namespaces {sorted(foreign)} are not in "
                "histoprompt.core.settings.COMPONENT_NAMESPACES"
            )
        base = ConnectionSettings.env_names() | TOP_LEVEL_NAMES | SHARED_NAMESPACED_NAMES
        stray = sorted(
            name
            for name in cls.env_names() - base
            if not name.startswith(tuple(cls.env_namespaces))
        )
        if stray:
            # Another process would not know these names and would reject them.
            raise TypeError(
                f"{cls.__name__} fields {stray} are outside its env_namespaces "
                f"{list(cls.env_namespaces)}; move them or list them in core settings"
            )
        _REGISTERED.update(cls.env_names())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Called on every instantiation with the sources already bound to this call's
        # environment and env file, so it is the one place that sees both.
        checks: list[tuple[str, Mapping[str, str | None]]] = []
        if isinstance(env_settings, EnvSettingsSource):
            checks.append(("the environment", env_settings.env_vars))
        if isinstance(dotenv_settings, DotEnvSettingsSource):
            checks.append((f"env file {dotenv_settings.env_file}", dotenv_settings.env_vars))
        problems = []
        for where, variables in checks:
            names = [k for k in variables if k.upper().startswith(ENV_PREFIX)]
            accepted = cls.env_names() | ConnectionSettings.env_names()
            problems += [
                f"{p} (in {where})"
                for p in unknown_setting_errors(names, cls.env_namespaces, accepted)
            ]
        if problems:
            raise ConfigError("; ".join(problems))
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @classmethod
    def load(cls: type[S], env_file: Path | None = None, **overrides: Any) -> S:
        """Build settings from env, the env file and explicit overrides (highest)."""
        path = env_file if env_file is not None else default_env_file()
        return cls(_env_file=path, **overrides)

    def kafka_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments for the configured security set-up."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap.split(","),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            cfg["sasl_mechanism"] = self.kafka_sasl_mechanism
            cfg["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                cfg["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            cfg["ssl_cafile"] = self.kafka_ssl_cafile
        return cfg

    def triton_grpc_options(self) -> dict[str, Any]:
        """tritonclient gRPC keyword arguments for TLS (none when plaintext)."""
        if not self.triton_ssl:
            return {}
        return {"ssl": True, "root_certificates": self.triton_ssl_root_cert}


_REGISTERED.update(ConnectionSettings.env_names())
