"""Units as types, so a micron never meets a pixel unnoticed."""

from __future__ import annotations

from typing import NewType

Microns = NewType("Microns", float)
"""A physical length in micrometres."""

Mpp = NewType("Mpp", float)
"""Microns per pixel: the resolution of a pyramid level or a tile grid."""

Pixels = NewType("Pixels", int)
"""A length in pixels at some stated level."""
