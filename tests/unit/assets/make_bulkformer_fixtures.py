"""How the BulkFormer fixtures next to this file were made (run once, by hand; not a test).

It runs the PUBLISHED code, never vendored here: a checkout of KangBoming/BulkFormer at
commit 87ccc10 (release of 2025-12-11: utils/BulkFormer.py, utils/BulkFormer_block.py,
utils/Rope.py) on sys.path, with performer-pytorch 1.1.4 (local-attention 1.4.4) and
torch_geometric 2.8.1 installed in a throwaway folder:

    uv pip install --target /tmp/bfref --no-deps performer-pytorch==1.1.4 \\
        local-attention==1.4.4 einops torch_geometric xxhash psutil ...
    python make_bulkformer_fixtures.py /path/to/BulkFormer /tmp/bfref

Writes bulkformer_published_layouts.json (state-dict names, shapes, dtypes of the five
released sizes) and bulkformer_depth2_reference.{json,safetensors} (a depth-reduced model
with random weights and graph, an input, and the published outputs). All values SYNTHETIC.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).parent
SIZES = {
    "bulkformer_37m": (128, 1),
    "bulkformer_50m": (256, 2),
    "bulkformer_93m": (512, 6),
    "bulkformer_127m": (640, 8),
    "bulkformer_147m": (640, 12),
}


def _published(**kw: object) -> torch.nn.Module:
    from utils.BulkFormer import BulkFormer  # the published class

    base = {"graph": None, "gene_emb": None, "bin_head": 12, "bins": 0, "gb_repeat": 1}
    return BulkFormer(**{**base, **kw})  # type: ignore[no-any-return]


def layouts() -> None:
    out = {"source": "state_dict() of KangBoming/BulkFormer @87ccc10", "variants": {}}
    for name, (dim, p) in SIZES.items():
        m = _published(dim=dim, gene_length=20010, full_head=8, p_repeat=p)
        out["variants"][name] = [  # type: ignore[index]
            [k, list(v.shape), str(v.dtype).removeprefix("torch.")]
            for k, v in m.state_dict().items()
        ]
    (HERE / "bulkformer_published_layouts.json").write_text(json.dumps(out))


def depth2_reference() -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    n, dim, heads, p = 40, 32, 8, 2
    edge_index = torch.stack([torch.arange(n).repeat_interleave(4), torch.randint(0, n, (4 * n,))])
    weight = torch.rand(4 * n) + 0.1
    m = _published(dim=dim, gene_length=n, full_head=heads, p_repeat=p)
    with torch.no_grad():
        for param in m.parameters():
            param.copy_(torch.randn_like(param) * 0.2)
    m.eval()
    # The notebook's SparseTensor(row=graph[1], col=graph[0], value=w).t() equals GCNConv's
    # COO input edge_index [graph[1], graph[0]] with edge_weight w (no torch_sparse needed).
    coo = (torch.stack([edge_index[1], edge_index[0]]), weight)

    def block_forward(self, x, graph):  # type: ignore[no-untyped-def]
        x = self.layernorm(x)
        x = x + self.g(x, coo[0], coo[1])
        return self.f(x)

    for block in m.gb_formers:
        block.forward = types.MethodType(block_forward, block)
    x = torch.rand(3, n) * 6
    x[0, :5] = -10.0
    x[1, 7] = 0.0
    with torch.no_grad():
        feats = m(x, mask_prob=0.125)
        expr = m(x, mask_prob=0.125, output_expr=True)
    state = {f"state.{k}": v.contiguous().clone() for k, v in m.state_dict().items()}
    tensors = {**state, "graph": edge_index, "graph_weight": weight, "input": x}
    tensors |= {"output_gene_level": feats, "output_expr": expr}
    save_file(tensors, str(HERE / "bulkformer_depth2_reference.safetensors"))
    meta = {
        "source": "KangBoming/BulkFormer @87ccc10, performer-pytorch 1.1.4, torch_geometric 2.8.1",
        "config": {"dim": dim, "gene_length": n, "full_head": heads, "p_repeat": p},
        "mask_prob": 0.125,
        "layout": [[k, list(v.shape), str(v.dtype)] for k, v in m.state_dict().items()],
    }
    (HERE / "bulkformer_depth2_reference.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    sys.path[:0] = sys.argv[1:3]
    layouts()
    depth2_reference()
