"""A bounded walk of a TIFF's IFD chain, before any TIFF library sees the file.

tifffile follows the chain of next-IFD offsets without bounding it: a 901-byte file whose
second IFD is empty and names itself as the next one made it list pages forever (found by
the issue 17 atheris run). So the chain is walked here first, through the ranged-read block
cache (a few small GETs for a real slide's handful of IFDs): a loop, more than MAX_IFDS
IFDs, or an IFD that runs past the end is SlideError `corrupt_tiff`.
"""

from __future__ import annotations

import struct

from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.ranged import ByteSource, RangedFile

__all__ = ["MAX_IFDS", "check_ifd_chain"]

MAX_IFDS = 4096
"""A pyramid has a level per IFD plus label, macro and thumbnail: a few dozen at most."""

# (count format, count size, entry size, offset format, offset size) per TIFF version
_LAYOUT = {42: ("H", 2, 12, "I", 4), 43: ("Q", 8, 20, "Q", 8)}


def _corrupt(why: str) -> SlideError:
    return SlideError(f"TIFF IFD chain: {why}", code="corrupt_tiff")


def check_ifd_chain(source: ByteSource) -> int:
    """The number of IFDs in the main chain; SlideError `corrupt_tiff` for a chain that
    loops, is longer than MAX_IFDS, or leaves the object."""
    f = RangedFile(source, block_size=64 * 1024, blocks=16)
    head = f.pread(0, 16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        raise _corrupt("no TIFF header")
    version = struct.unpack_from(order + "H", head, 2)[0]
    if version not in _LAYOUT or (version == 43 and len(head) < 16):
        raise _corrupt(f"unknown TIFF version {version}")
    count_fmt, count_size, entry_size, off_fmt, off_size = _LAYOUT[version]
    offset = struct.unpack_from(order + off_fmt, head, 4 if version == 42 else 8)[0]
    seen: set[int] = set()
    while offset:
        if offset in seen:
            raise _corrupt("it loops back to an earlier IFD")
        if len(seen) >= MAX_IFDS:
            raise _corrupt(f"more than {MAX_IFDS} IFDs")
        seen.add(offset)
        raw = f.pread(offset, count_size)
        if len(raw) < count_size:
            raise _corrupt("an IFD offset points past the end")
        count = struct.unpack_from(order + count_fmt, raw)[0]
        raw = f.pread(offset + count_size + count * entry_size, off_size)
        if len(raw) < off_size:
            raise _corrupt("an IFD runs past the end")
        offset = struct.unpack_from(order + off_fmt, raw)[0]
    if not seen:
        raise _corrupt("no IFD")
    return len(seen)
