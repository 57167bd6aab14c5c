"""ClientSettings: the CLI's settings, and where they come from.

Precedence, highest first:
1. flags (`--s3-endpoint`, `--triton-url`, ...), passed as overrides;
2. environment `HISTOPROMPT_*`;
3. a TOML config file: `--config FILE`, else `$HISTOPROMPT_CONFIG`
   (keys are the field names, at top level or under a `[histoprompt]` table);
4. the env file written by the local stack: `--env-file`, `$HISTOPROMPT_ENV_FILE`, or
   `./stack.env` when present;
5. defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError

from histoprompt.core.errors import ConfigError
from histoprompt.core.settings import ENV_PREFIX, ConnectionSettings, default_env_file

CONFIG_ENV_VAR = "HISTOPROMPT_CONFIG"

__all__ = ["CONFIG_ENV_VAR", "ClientSettings", "load_settings"]


class ClientSettings(ConnectionSettings):
    """Connections (inherited) plus what only the CLI needs. Env names: HISTOPROMPT_<FIELD>.

    The fields predate namespaces and are listed in core's TOP_LEVEL_NAMES; new ones go
    under HISTOPROMPT_CLIENT_.
    """

    env_namespaces: ClassVar[tuple[str, ...]] = ("CLIENT_",)

    publish_events: bool = Field(
        True,
        description=(
            "publish the S3 event to Kafka after an upload; turn off when the bucket sends "
            "its own notifications (MinIO/AWS), or each slide would be processed twice"
        ),
    )
    gene_sets_gmt: Path | None = Field(
        None, description="a user GMT file whose sets join the bundled Hallmarks"
    )
    upload_prefix: str = Field("uploads", description="key prefix for submitted slides")
    part_size_mib: int = Field(16, ge=5, le=5120, description="multipart part size (MiB)")
    wait_timeout: float = Field(1800.0, gt=0, description="seconds `submit --wait` waits")
    connect_timeout: float = Field(5.0, gt=0, description="seconds to reach a service")
    reference_name: str | None = Field(
        None, description="RNA reference (models bucket) used to list unknown genes"
    )
    ingest_group_id: str = Field(
        "histoprompt-ingest", description="the ingest consumer group (for lag in `status`)"
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} does not exist") from err
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err
    table = data.get("histoprompt", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [histoprompt] must be a table")
    values = {str(k).lower().removeprefix(ENV_PREFIX.lower()): v for k, v in table.items()}
    unknown = sorted(set(values) - set(ClientSettings.model_fields))
    if unknown:
        raise ConfigError(f"config file {path}: unknown settings {unknown}")
    return values


def load_settings(
    config: Path | None = None,
    env_file: Path | None = None,
    **flags: Any,
) -> ClientSettings:
    """Build ClientSettings with the precedence above; `flags` set to None are ignored."""
    env = os.environ
    config_path = config or (Path(env[CONFIG_ENV_VAR]) if env.get(CONFIG_ENV_VAR) else None)
    file_values = _read_toml(config_path) if config_path is not None else {}
    # The environment outranks the config file, so drop what the environment sets.
    env_set = {k.upper() for k in env if k.upper().startswith(ENV_PREFIX)}
    values = {k: v for k, v in file_values.items() if ENV_PREFIX + k.upper() not in env_set}
    values.update({k: v for k, v in flags.items() if v is not None})
    path = env_file if env_file is not None else default_env_file()
    if path is not None and not path.is_file():
        raise ConfigError(
            f"env file {path} does not exist (set by --env-file/HISTOPROMPT_ENV_FILE)"
        )
    try:
        return ClientSettings(_env_file=path, **values)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(f"invalid setting {where}: {first.get('msg')}") from err
