"""Loading weight files for frozen encoders: local path or s3:// URI, never a model hub.

Accepted formats: safetensors, or a torch pickle read with `weights_only=True`. Every tensor is
checked against the architecture (names, shapes, floating dtype) and rejected when it holds
NaN or Inf, so a wrong file fails loudly at load instead of producing quiet garbage.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from histoprompt.core.s3 import make_minio, parse_s3_uri
from histoprompt.export.errors import HubNameError, WeightsError

if TYPE_CHECKING:
    from histoprompt.core.settings import ConnectionSettings

_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "hf://", "timm/", "huggingface:")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PREFIXES_TO_STRIP = ("module.", "model.", "trunk.")


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def is_hub_name(ref: str) -> bool:
    """True for 'hf-hub:org/name' and a bare 'org/name' that is neither a local path nor
    a weight file name (so a missing 'weights/uni.safetensors' is reported as missing)."""
    if ref.startswith(_HUB_PREFIXES):
        return True
    if ref.endswith(_WEIGHT_SUFFIXES):
        return False
    return bool(_HUB_NAME.match(ref)) and not Path(ref).exists()


def hub_error(ref: str) -> HubNameError:
    name = ref.split(":", 1)[-1].removeprefix("//")
    return HubNameError(
        f"{ref!r} is a model-hub name; histoprompt never downloads at run time. Pre-fetch the "
        f"weights once, e.g. `huggingface-cli download {name} --local-dir weights/` (accept the "
        "licence on the hub first), then pass the local .safetensors/.bin path, or upload it "
        "with `mc cp` to s3://<models-bucket>/weights/ and pass that s3:// URI."
    )


def fetch_weights(ref: str | Path, settings: ConnectionSettings | None = None) -> Path:
    """Resolve a weight reference to a local file (downloads s3:// URIs to a temp dir)."""
    text = str(ref)
    if text.startswith("s3://"):
        if settings is None:
            raise WeightsError(f"{text}: an s3:// weight URI needs connection settings")
        bucket, key = parse_s3_uri(text)
        target = Path(tempfile.mkdtemp(prefix="histoprompt-weights-")) / Path(key).name
        try:
            make_minio(settings).fget_object(bucket, key, str(target))
        except Exception as err:
            raise WeightsError(f"cannot fetch weights {text}: {err}") from err
        return target
    if is_hub_name(text):
        raise hub_error(text)
    path = Path(text)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist (expected a file, not a folder)")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch pickle (weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"cannot read weights from {path}: {err} (expected safetensors or a torch state "
            "dict saved with torch.save)"
        ) from err
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a flat mapping of tensor names to tensors")
    return dict(obj)


def _strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    if set(state) & expected:
        return state
    for prefix in _PREFIXES_TO_STRIP:
        stripped = {k.removeprefix(prefix): v for k, v in state.items()}
        if set(stripped) & expected:
            return stripped
    return state


def check_state_dict(
    module: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str
) -> dict[str, torch.Tensor]:
    """Validate names, shapes, dtypes and finiteness; return tensors cast to the module dtypes."""
    reference = module.state_dict()
    state = _strip_prefixes(state, set(reference))
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        raise WeightsError(
            f"{source} does not match the architecture: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
            "is this the right encoder name for this file?"
        )
    checked: dict[str, torch.Tensor] = {}
    for name, ref in reference.items():
        got = state[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise WeightsError(
                f"{source}: tensor {name!r} has shape {tuple(got.shape)}, "
                f"the architecture expects {tuple(ref.shape)}"
            )
        if ref.is_floating_point() != got.is_floating_point():
            raise WeightsError(
                f"{source}: tensor {name!r} has dtype {got.dtype}, expected {ref.dtype}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise WeightsError(f"{source}: tensor {name!r} contains NaN or Inf values")
        checked[name] = got.to(ref.dtype)
    return checked


def load_weights_into(
    module: torch.nn.Module,
    ref: str | Path,
    settings: ConnectionSettings | None = None,
) -> torch.nn.Module:
    """Fetch, validate and load weights into `module` (in place); returns the module."""
    path = fetch_weights(ref, settings)
    state = check_state_dict(module, read_state_dict(path), source=str(ref))
    module.load_state_dict(state, strict=True)
    return module
