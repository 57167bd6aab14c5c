"""Connection settings shared by every part, read from env `HISTOPROMPT_*` and `stack.env`.

Each part (ingest, client, export, stack) subclasses `ConnectionSettings` with its own
fields; instances are immutable and passed in, never global.

Precedence: init arguments > environment > env file > defaults. The env file is
`$HISTOPROMPT_ENV_FILE` if set, else `./stack.env` if it exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "HISTOPROMPT_"
ENV_FILE_VAR = "HISTOPROMPT_ENV_FILE"
DEFAULT_ENV_FILE = "stack.env"

S = TypeVar("S", bound="ConnectionSettings")


def default_env_file() -> Path | None:
    """The env file settings read: `$HISTOPROMPT_ENV_FILE`, else `./stack.env` when present."""
    explicit = os.environ.get(ENV_FILE_VAR)
    if explicit:
        return Path(explicit)
    local = Path(DEFAULT_ENV_FILE)
    return local if local.is_file() else None


class ConnectionSettings(BaseSettings):
    """Where the backing services are. Field names map to `HISTOPROMPT_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", env_file_encoding="utf-8"
    )

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_security_protocol: str = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: str | None = Field(None, description="e.g. SCRAM-SHA-512")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None

    s3_endpoint: str = Field("127.0.0.1:8333", description="S3 endpoint host:port")
    s3_access_key: SecretStr = Field(SecretStr("histoprompt"), description="S3 access key")
    s3_secret_key: SecretStr = Field(SecretStr("histoprompt-secret"), description="S3 secret")
    s3_secure: bool = Field(False, description="use https for S3")
    s3_region: str = "us-east-1"
    slides_bucket: str = "histoprompt-slides"
    results_bucket: str = "histoprompt-results"
    models_bucket: str = "histoprompt-models"

    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC host:port")
    triton_http_url: str = Field("127.0.0.1:8000", description="Triton HTTP host:port")
    triton_metrics_url: str = Field("http://127.0.0.1:8002/metrics")
    prometheus_url: str = Field("http://127.0.0.1:9090", description="Prometheus base URL")

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
