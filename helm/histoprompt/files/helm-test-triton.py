# helm test: Triton ready, one patch_embed inference. Run by
# templates/tests/triton-inference.yaml in the ingest image; tests/unit/test_helm_chart.py
# runs it against a stub client.
import asyncio
import os
import sys

import numpy as np

from histoprompt.wsi.triton import TritonClient


async def main() -> int:
    url = os.environ["HISTOPROMPT_TRITON_URL"]
    client = TritonClient(url, timeout_s=60.0, attempts=5, base_s=1.0)
    try:
        if not await client.ready():
            print(f"FAIL: Triton at {url} does not serve patch_embed / slide_to_pathways")
            return 1
        served = await client.served_model()
        px = served.spec.tile_px
        tiles = np.random.default_rng(0).integers(0, 255, (2, px, px, 3), dtype=np.uint8)
        embeddings = await client.patch_embed(tiles)
        if embeddings.shape != (2, served.spec.embed_dim):
            print(f"FAIL: patch_embed returned {embeddings.shape}")
            return 1
        if not np.isfinite(embeddings).all():
            print("FAIL: patch_embed returned non-finite values")
            return 1
        dim = embeddings.shape[1]
        print(f"OK: {url} encoder={served.encoder} version={served.version} dim={dim}")
        return 0
    finally:
        await client.close()


sys.exit(asyncio.run(main()))
