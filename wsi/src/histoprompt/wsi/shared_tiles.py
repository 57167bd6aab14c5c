"""patch_embed through system shared memory, for ingest running beside Triton on one host.

Tiles are assembled straight into a POSIX shared-memory region that Triton has registered,
and the request names the region instead of carrying the bytes: no tile crosses gRPC, so
neither side serialises or copies ~150 KB per tile. Results are unchanged (the same uint8
tiles reach the same model). One region per batch slot: `max_inflight` requests in flight
plus the batch being read. Off by default (HISTOPROMPT_INGEST_TRITON_SHARED_MEMORY): Triton
in another pod or host cannot see this host's /dev/shm.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.read_ahead import ReadAhead
from histoprompt.wsi.slide import SlideReader
from histoprompt.wsi.tiling import TilePlan

__all__ = ["SharedMemoryInference", "embed_tiles_shared"]


@runtime_checkable
class SharedMemoryInference(Protocol):
    """What a client needs for patch_embed over system shared memory (TritonClient)."""

    async def register_region(self, name: str, key: str, size: int) -> None: ...

    async def unregister_region(self, name: str) -> None: ...

    async def patch_embed_region(self, name: str, shape: tuple[int, ...]) -> NDArray[Any]: ...


class _Regions:
    """`slots` shared-memory regions of `size` bytes each, created and registered together."""

    def __init__(self, slots: int, size: int) -> None:
        import tritonclient.utils.shared_memory as shm

        self._shm = shm
        tag = uuid.uuid4().hex[:12]
        self.names = [f"hp-tiles-{tag}-{i}" for i in range(slots)]
        self.handles: list[Any] = []
        try:
            for name in self.names:
                self.handles.append(shm.create_shared_memory_region(name, f"/{name}", size))
        except Exception:
            self.destroy()
            raise
        self.size = size

    def view(self, slot: int, shape: tuple[int, ...]) -> NDArray[Any]:
        arr: NDArray[Any] = self._shm.get_contents_as_numpy(self.handles[slot], np.uint8, shape)
        return arr

    def destroy(self) -> None:
        for handle in self.handles:
            self._shm.destroy_shared_memory_region(handle)
        self.handles = []


async def embed_tiles_shared(
    reader: SlideReader,
    plan: TilePlan,
    inference: SharedMemoryInference,
    embed_dim: int,
    batch_size: int,
    max_inflight: int,
    read_ahead: int = 32,
) -> tuple[NDArray[Any], float]:
    """histoprompt.wsi.scoring.embed_tiles through shared memory: the same embeddings."""
    px = plan.tile_px
    regions = _Regions(max_inflight + 1, batch_size * px * px * 3)
    free: asyncio.Queue[int] = asyncio.Queue()
    registered: list[str] = []
    result = np.empty((plan.n_tiles, embed_dim), dtype=np.float32)
    read_s = 0.0
    ahead = ReadAhead(read_ahead * batch_size)

    async def infer(slot: int, start: int, n: int) -> None:
        try:
            emb = await inference.patch_embed_region(regions.names[slot], (n, px, px, 3))
            if emb.shape != (n, embed_dim):
                raise SlideError(
                    f"patch_embed returned {emb.shape}, expected {(n, embed_dim)}",
                    code="infer_error",
                )
            result[start : start + n] = emb
        finally:
            free.put_nowait(slot)

    tasks: list[asyncio.Task[None]] = []
    try:
        for slot, name in enumerate(regions.names):
            await inference.register_region(name, f"/{name}", regions.size)
            registered.append(name)
            free.put_nowait(slot)
        for start in range(0, plan.n_tiles, batch_size):
            stop = min(start + batch_size, plan.n_tiles)
            slot = await free.get()
            view = regions.view(slot, (stop - start, px, px, 3))
            r0 = time.perf_counter()
            await ahead.read_async(reader, plan, start, stop, view)
            read_s += time.perf_counter() - r0
            tasks.append(asyncio.create_task(infer(slot, start, stop - start)))
            for t in tasks:  # surface a failed request early
                if t.done() and (exc := t.exception()) is not None:
                    raise exc
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        ahead.close()
        for name in registered:
            await inference.unregister_region(name)
        regions.destroy()
    return result, read_s
