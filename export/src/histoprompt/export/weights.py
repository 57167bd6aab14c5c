"""Loading weight files for frozen encoders: local path or s3:// URI, never a model hub.

Accepted formats: safetensors, or a torch pickle read with `weights_only=True`. Every tensor is
checked against the architecture (names, shapes, floating dtype) and rejected when it holds
NaN or Inf, so a wrong file fails loudly at load instead of producing quiet garbage.

Published checkpoints come in several wrappers: a `state_dict` (or `model`, `module`) entry
around the tensors, and key prefixes such as `module.` (DataParallel), `model.` or `trunk.`.
The loader unwraps whichever of these brings the file's names closest to the architecture's,
then checks strictly. A file that still does not match raises `CheckpointLayoutError`, which
names the known published layout the file looks like (`KnownLayout`, supplied by the caller),
the first missing and unexpected tensors and the first shape mismatch.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from histoprompt.core.s3 import make_minio, parse_s3_uri
from histoprompt.export.errors import CheckpointLayoutError, HubNameError, WeightsError

if TYPE_CHECKING:
    from histoprompt.core.settings import ConnectionSettings

_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "hf://", "timm/", "huggingface:")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Key prefixes that wrap a state dict (DataParallel, Lightning/EMA wrappers, a bare trunk,
# torch.compile) and mapping entries that hold it.
_PREFIXES_TO_STRIP = ("module.", "model.", "trunk.", "_orig_mod.")
_CONTAINER_KEYS = ("state_dict", "model", "module")
_BLOCK_INDEX = re.compile(r"(?<=\.)\d+(?=\.)")

Shape = tuple[int, ...]


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
    obj = _unwrap_container(obj)
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a flat mapping of tensor names to tensors")
    return dict(obj)


def _unwrap_container(obj: object) -> object:
    """{'state_dict': {...}} (and 'model' / 'module' entries) -> the inner mapping."""
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    return obj


@dataclass(frozen=True)
class KnownLayout:
    """A published checkpoint's tensor names and shapes, to say what a wrong file looks like."""

    name: str  # the name to pass instead, e.g. "uni"
    label: str  # what the user downloaded, e.g. "UNI (MahmoodLab/UNI pytorch_model.bin)"
    tensors: Mapping[str, Shape]


def tensor_layout(state: Mapping[str, torch.Tensor]) -> dict[str, Shape]:
    """Names and shapes of a state dict (works on the meta device)."""
    return {k: tuple(v.shape) for k, v in state.items()}


def unwrap_state(
    state: dict[str, torch.Tensor], expected: set[str]
) -> tuple[dict[str, torch.Tensor], str]:
    """Strip wrapper prefixes shared by every key while that brings the names closer to
    `expected`; returns the state and the prefix removed ('' when none)."""
    best, best_prefix, best_hits = state, "", len(set(state) & expected)
    current, removed = state, ""
    while best_hits < len(expected):
        prefix = next(
            (p for p in _PREFIXES_TO_STRIP if current and all(k.startswith(p) for k in current)),
            None,
        )
        if prefix is None:
            break
        current = {k.removeprefix(prefix): v for k, v in current.items()}
        removed += prefix
        hits = len(set(current) & expected)
        if hits > best_hits:
            best, best_prefix, best_hits = current, removed, hits
    return best, best_prefix


def _blocks(names: Sequence[str] | Mapping[str, Shape]) -> int:
    """Number of numbered blocks (the largest index after `blocks.` / `layers.`, plus one)."""
    indices = [
        int(m.group(1))
        for k in names
        if (m := re.search(r"\.?(?:blocks|layers)\.(\d+)\.", "." + k))
    ]
    return max(indices) + 1 if indices else 0


def _normalised(layout: Mapping[str, Shape]) -> set[tuple[str, Shape]]:
    """(name with block indices replaced by '*', shape): compares layouts of any depth."""
    return {(_BLOCK_INDEX.sub("*", k), shape) for k, shape in layout.items()}


def closest_layout(
    layout: Mapping[str, Shape], known: Sequence[KnownLayout]
) -> tuple[KnownLayout, float] | None:
    """The known layout with the most tensor names and shapes in common (block indices
    ignored, equal depth breaks ties) and that share, or None when nothing is known."""
    if not known or not layout:
        return None
    mine, depth = _normalised(layout), _blocks(layout)

    def score(candidate: KnownLayout) -> tuple[float, bool]:
        theirs = _normalised(candidate.tensors)
        return len(mine & theirs) / len(mine | theirs), _blocks(candidate.tensors) == depth

    best = max(known, key=score)
    return best, score(best)[0]


def _first(items: Sequence[str], n: int = 3) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(repr(i) for i in items[:n]) + more


def describe_layout_mismatch(
    source: str,
    expected: Mapping[str, Shape],
    got: Mapping[str, Shape],
    *,
    expected_name: str = "the architecture",
    known: Sequence[KnownLayout] = (),
    removed_prefix: str = "",
) -> str:
    """One message: which known layout the file looks like, then missing, unexpected and
    shape-mismatched tensors (the first few of each, in the architecture's / file's order)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [k for k in expected if k in got and tuple(got[k]) != tuple(expected[k])]
    unwrapped = f" (wrapper prefix {removed_prefix!r} removed)" if removed_prefix else ""
    parts = [f"{source}{unwrapped} does not match the published layout of {expected_name}"]
    match = closest_layout(got, known)
    if match is not None and match[1] >= 0.5:
        layout, share = match
        same = " (the one asked for)" if layout.name == expected_name else ""
        parts.append(
            f"it looks like {layout.label}{same}: {share:.0%} of its tensor names and shapes "
            f"match, {_blocks(got)} blocks in the file, {_blocks(layout.tensors)} published"
        )
        if not same:
            parts.append(f"pass the encoder name {layout.name!r} for this file")
    elif known:
        names = ", ".join(layout.name for layout in known)
        parts.append(f"it matches none of the known published layouts ({names})")
    if missing:
        parts.append(f"{len(missing)} missing: {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_first(unexpected)}")
    if shapes:
        k = shapes[0]
        parts.append(
            f"{len(shapes)} shape mismatch: tensor {k!r} has shape {tuple(got[k])} in the file, "
            f"the architecture expects {tuple(expected[k])}"
        )
    return "; ".join(parts)


def _finite(t: torch.Tensor) -> bool:
    """No NaN or Inf (max and min propagate both, without a tensor-sized temporary)."""
    return t.numel() == 0 or bool(torch.isfinite(t.amax()) and torch.isfinite(t.amin()))


def check_state_dict(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    expected_name: str = "the architecture",
    known_layouts: Callable[[], Sequence[KnownLayout]] | None = None,
    adapt: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Validate names, shapes, dtypes and finiteness; return tensors cast to the module dtypes.

    Names and shapes are checked together: any difference raises one CheckpointLayoutError.
    `known_layouts` is called only then, to say which published layout the file looks like.
    `adapt` is a published loader's own step, applied after unwrapping (e.g. resampling a
    position embedding stored on another grid).
    """
    reference = tensor_layout(module.state_dict())
    state, removed = unwrap_state(state, set(reference))
    if adapt is not None:
        state = adapt(state)
    got = tensor_layout(state)
    if set(got) != set(reference) or any(got[k] != reference[k] for k in reference):
        raise CheckpointLayoutError(
            describe_layout_mismatch(
                source,
                reference,
                got,
                expected_name=expected_name,
                known=known_layouts() if known_layouts is not None else (),
                removed_prefix=removed,
            )
        )
    dtypes = {k: v.dtype for k, v in module.state_dict().items()}
    checked: dict[str, torch.Tensor] = {}
    for name, dtype in dtypes.items():
        got_t = state[name]
        if dtype.is_floating_point != got_t.is_floating_point():
            raise WeightsError(
                f"{source}: tensor {name!r} has dtype {got_t.dtype}, expected {dtype}"
            )
        if got_t.is_floating_point() and not _finite(got_t):
            raise WeightsError(f"{source}: tensor {name!r} contains NaN or Inf values")
        checked[name] = got_t.to(dtype)
    return checked


def load_weights_into(
    module: torch.nn.Module,
    ref: str | Path,
    settings: ConnectionSettings | None = None,
    *,
    expected_name: str = "the architecture",
    known_layouts: Callable[[], Sequence[KnownLayout]] | None = None,
    adapt: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> torch.nn.Module:
    """Fetch, validate and load weights into `module` (in place, strict); returns the module.

    A module built on the meta device takes the file's tensors as they are (no second copy);
    it must then have no tensor that the file does not set.
    """
    path = fetch_weights(ref, settings)
    state = check_state_dict(
        module,
        read_state_dict(path),
        source=str(ref),
        expected_name=expected_name,
        known_layouts=known_layouts,
        adapt=adapt,
    )
    on_meta = any(t.is_meta for t in module.state_dict().values())
    module.load_state_dict(state, strict=True, assign=on_meta)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(
            f"{ref}: the file does not set {_first(left)} (still on the meta device)"
        )
    return module
