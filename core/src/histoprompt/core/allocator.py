"""glibc malloc tuned for processes that churn large arrays: ingest and `histoprompt predict`
(decoded frames), and the Triton python-backend stubs (tile batches and their float32 pixels).

A decoded 256^2 px frame is 192 KiB: above malloc's initial mmap threshold, and the frame
cache (`ReadLimits.frame_cache`, 256 frames) churns tens of MiB of them per slide. With
glibc's defaults, freed frames leave the heap (the top is trimmed once more than twice the
dynamic mmap threshold is free) and the next frames fault their pages in again, which the
data-path benchmark charged to decode (issue 15; its history row in BENCHMARKS.md). So the
process keeps up to `TRIM_THRESHOLD` of freed heap for reuse and serves blocks below
`MMAP_THRESHOLD` from the heap. The stubs churn their batches the same way, in larger blocks
(32 tiles of float32 pixels are 19 MiB): a fixed threshold below that had each batch mapped and
faulted in afresh, slower than glibc's own dynamic threshold, hence glibc's largest allowed
value. The ViT-S pipeline-efficiency bench compares ingest through a stub with ONNX Runtime in
the (tuned) benchmark process, so both sides run tuned.

Memory stays bounded: what is kept is at most `TRIM_THRESHOLD` of free heap per malloc arena
(one per thread that allocates: the loop, each slide's reader; in each stub process), on top
of the bounded working set. A no-op where the C library has no `mallopt` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

TRIM_THRESHOLD = 64 * 1024 * 1024
"""Free heap kept for reuse before malloc returns it to the system (M_TRIM_THRESHOLD)."""
MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks at least this large are mapped on their own (M_MMAP_THRESHOLD; glibc's maximum on
64-bit)."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Apply both thresholds to this process; True where the C library took them. Idempotent;
    call it once at start, before the first slide or request."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
