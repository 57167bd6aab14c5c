"""What a served model knows about itself: its config, parameters and artifact folder.

Artifacts (ONNX files, encoder.json, gene contract, reference DB) are looked up in the
model's version folder (`<repo>/<model>/<version>/`) unless the config parameter
`artifact_uri` names another folder: a local path, or an s3:// prefix that is downloaded
once at load using the HISTOPROMPT_* connection settings.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histoprompt.serving.errors import ModelConfigError

# Triton config type names -> numpy dtypes (TYPE_STRING is bytes objects).
_TRITON_DTYPES: dict[str, Any] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


@dataclass(frozen=True)
class ModelContext:
    name: str
    version_dir: Path
    config: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_triton_args(cls, args: dict[str, str]) -> ModelContext:
        """Build from the `args` dict Triton passes to `initialize`."""
        try:
            config = json.loads(args["model_config"])
            version_dir = Path(args["model_repository"]) / str(args["model_version"])
            name = str(args.get("model_name") or config.get("name"))
        except (KeyError, json.JSONDecodeError) as err:
            raise ModelConfigError(f"Triton passed no usable model config: {err}") from err
        return cls.from_config(config, version_dir, name)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], version_dir: Path, name: str | None = None
    ) -> ModelContext:
        params = {
            k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()
        }
        return cls(
            name=name or str(config.get("name", "")),
            version_dir=version_dir,
            config=config,
            parameters=params,
        )

    def param(self, key: str, default: str | None = None) -> str:
        value = self.parameters.get(key, "")
        if value:
            return value
        if default is None:
            raise ModelConfigError(f"model {self.name}: config parameter {key!r} is required")
        return default

    def int_param(self, key: str, default: int | None = None) -> int:
        raw = self.param(key, None if default is None else str(default))
        try:
            return int(raw)
        except ValueError as err:
            raise ModelConfigError(
                f"model {self.name}: parameter {key!r} must be an integer, got {raw!r}"
            ) from err

    def output_dtype(self, output: str) -> Any:
        """numpy dtype of an output, from the model config (never a literal in model code)."""
        for out in self.config.get("output", []):
            if out.get("name") == output:
                dtype = _TRITON_DTYPES.get(str(out.get("data_type")))
                if dtype is None:
                    raise ModelConfigError(f"{self.name}: unsupported type {out.get('data_type')}")
                return dtype
        raise ModelConfigError(f"model {self.name}: output {output!r} is not in the config")

    def artifact_dir(self) -> Path:
        """Folder holding this model's artifacts (see module docstring)."""
        uri = self.parameters.get("artifact_uri", "")
        if not uri:
            return self.version_dir
        if uri.startswith("s3://"):
            return _download_prefix(uri)
        path = Path(uri)
        if not path.is_dir():
            raise ModelConfigError(f"model {self.name}: artifact_uri {uri} is not a folder")
        return path

    def artifact(self, filename: str) -> Path:
        path = self.artifact_dir() / filename
        if not path.is_file():
            raise ModelConfigError(
                f"model {self.name}: artifact {filename} not found in {path.parent}; install "
                "the bundle with `histoprompt-export model-repo --artifacts <bundle dir>`"
            )
        return path


def _download_prefix(uri: str) -> Path:
    from histoprompt.core.s3 import make_minio, parse_s3_uri
    from histoprompt.core.settings import ConnectionSettings

    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    target = Path(tempfile.mkdtemp(prefix="histoprompt-artifacts-"))
    try:
        client = make_minio(ConnectionSettings.load())
        found = False
        for obj in client.list_objects(bucket, prefix=prefix, recursive=True):
            name = str(obj.object_name)
            dest = target / name[len(prefix) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.fget_object(bucket, name, str(dest))
            found = True
    except Exception as err:
        raise ModelConfigError(f"cannot download artifacts from {uri}: {err}") from err
    if not found:
        raise ModelConfigError(f"no artifacts under {uri}")
    return target
