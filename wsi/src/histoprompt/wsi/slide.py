"""The slide interface every reader implements: levels with MPP, and region reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from numpy.typing import NDArray

from histoprompt.core.units import Mpp

BACKGROUND = 255


@dataclass(frozen=True)
class Level:
    """One pyramid level: size in its own pixels and its resolution."""

    width: int
    height: int
    mpp: Mpp


@dataclass(frozen=True)
class Region:
    """x, y, w, h in one level's pixels."""

    x: int
    y: int
    w: int
    h: int


class SlideReader(Protocol):
    """Levels finest first. Reads outside the image come back as white background."""

    @property
    def levels(self) -> Sequence[Level]: ...

    @property
    def format(self) -> str: ...

    def read_regions(
        self, level: int, regions: Sequence[Region], cache: bool = True
    ) -> list[NDArray[Any]]:
        """uint8 [h, w, 3] per region, fetched together (ranges coalesced).

        cache=False: read-once data (the mask level) stays out of the frame cache.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class PaintsRegions(Protocol):
    """A reader that writes equal-sized regions straight into a batch (DicomSlide)."""

    def read_regions_into(self, level: int, regions: Sequence[Region], out: NDArray[Any]) -> None:
        """uint8 `out` [len(regions), h, w, 3]: each region as read_regions returns it."""
        ...


def paste(canvas: NDArray[Any], tile: NDArray[Any], x: int, y: int) -> None:
    """Copy `tile` into `canvas` with its top-left at (x, y), clipped to the canvas."""
    h, w = canvas.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + tile.shape[1], w), min(y + tile.shape[0], h)
    if x0 >= x1 or y0 >= y1:
        return
    canvas[y0:y1, x0:x1] = tile[y0 - y : y1 - y, x0 - x : x1 - x]
