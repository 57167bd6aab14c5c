"""Input checks shared by every served model: dtype, rank and fixed dimensions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.serving.errors import RequestError


def check_tensor(
    name: str,
    array: NDArray[Any] | None,
    *,
    dtype: type[np.generic] | np.dtype[np.generic],
    shape: Sequence[int | None],
    min_first: int = 1,
) -> NDArray[Any]:
    """Return `array` when it has `dtype`, rank len(shape) and the fixed dims (None = any)."""
    if array is None:
        raise RequestError(f"input {name} is missing")
    want = np.dtype(dtype)
    if array.dtype != want:
        raise RequestError(f"input {name} must be {want.name}, got {array.dtype.name}")
    if array.ndim != len(shape):
        raise RequestError(
            f"input {name} must have rank {len(shape)} {_fmt(shape)}, got shape {array.shape}"
        )
    for axis, (got, expected) in enumerate(zip(array.shape, shape, strict=True)):
        if expected is not None and got != expected:
            raise RequestError(
                f"input {name} dim {axis} must be {expected} {_fmt(shape)}, got shape {array.shape}"
            )
    if array.shape[0] < min_first:
        raise RequestError(f"input {name} must have at least {min_first} rows, got none")
    if want.kind == "f" and not np.isfinite(array).all():
        raise RequestError(f"input {name} contains NaN or Inf")
    return array


def _fmt(shape: Sequence[int | None]) -> str:
    return "[" + ",".join("-1" if d is None else str(d) for d in shape) + "]"
