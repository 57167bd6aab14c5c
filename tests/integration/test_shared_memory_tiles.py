"""patch_embed through system shared memory (HISTOPROMPT_INGEST_TRITON_SHARED_MEMORY) gives
the embeddings of the gRPC path, on the real Triton of the local stack, and leaves no region
behind (neither registered in Triton nor in /dev/shm)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from histoprompt.stack.handle import StackHandle
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.scoring import ScoringOptions, embed_tiles
from histoprompt.wsi.sources import open_local
from histoprompt.wsi.tiling import plan_tiles
from histoprompt.wsi.triton import TritonClient

pytestmark = pytest.mark.integration


async def _embed(url: str, files: list[Path], shared: bool) -> Any:
    client = TritonClient(url, 60, 1, 0.5)
    if shared:  # no tile bytes may go by gRPC on this path

        async def no_bytes(tiles: Any) -> Any:
            raise AssertionError("tiles sent through gRPC with shared memory on")

        client.patch_embed = no_bytes  # type: ignore[method-assign]
    opened = open_local(files, ReadLimits())
    try:
        spec = (await client.served_model()).spec
        plan = plan_tiles(opened.reader, spec, min_tissue=0.25)
        options = ScoringOptions(batch_size=8, max_inflight=2, shared_memory=shared)
        emb, _ = await embed_tiles(opened.reader, plan, client, spec.embed_dim, options)
        status = await client._client.get_system_shared_memory_status(as_json=True)
        return emb, status
    finally:
        opened.close()
        await client.close()


def test_shared_memory_tiles_give_the_grpc_embeddings(
    stack: StackHandle, served_model: object, tmp_path: Path
) -> None:
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series

    files = write_dicom_series(
        tmp_path, DicomSeriesSpec(width=1536, height=1024, levels=2, tile=256, mpp=0.5)
    )
    grpc, _ = asyncio.run(_embed(stack.triton_grpc, files, shared=False))
    shm, status = asyncio.run(_embed(stack.triton_grpc, files, shared=True))
    assert grpc.shape[0] > 8  # several batches, so several regions took turns
    np.testing.assert_allclose(shm, grpc, rtol=0, atol=1e-6)
    assert not [r for r in status.get("regions", {}) if "hp-tiles" in str(r)]
    assert not list(Path("/dev/shm").glob("hp-tiles-*"))
