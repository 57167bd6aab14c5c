"""Published tile-encoder checkpoints load strictly and compute what the published model does.

The reference modules here are written from each model's published definition (model card
timm arguments; CONCH v1.5's vision tower as in the CONCH repository / TRIDENT), not from
the project's code. Layout: full depth on the meta device (no memory, no compute). Files and
values: a 2-block configuration with RANDOM (synthetic) weights, never the real checkpoints.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import SwiGLUPacked
from torch import nn
from torch.nn import functional as F  # noqa: N812

from histoprompt.export.encoder_architectures import checkpoint_root
from histoprompt.export.encoder_specs import PUBLISHED, encoder_spec
from histoprompt.export.encoders import build_architecture, load_encoder
from histoprompt.export.errors import CheckpointLayoutError, WeightsError
from histoprompt.export.weights import tensor_layout

NAMES = ["uni", "uni2_h", "conch_v15", "virchow2", "h_optimus_0"]
DEPTH = 2

# The model cards' timm arguments, written out as published.
_TIMM = {
    "uni": (
        "vit_large_patch16_224",
        dict(img_size=224, patch_size=16, init_values=1e-5, num_classes=0, dynamic_img_size=True),
    ),
    "uni2_h": (
        "vit_giant_patch14_224",
        dict(
            img_size=224, patch_size=14, depth=24, num_heads=24, init_values=1e-5,
            embed_dim=1536, mlp_ratio=2.66667 * 2, num_classes=0, no_embed_class=True,
            mlp_layer=SwiGLUPacked, act_layer=nn.SiLU, reg_tokens=8, dynamic_img_size=True,
        ),
    ),
    "virchow2": (
        "vit_huge_patch14_224",
        dict(
            img_size=224, init_values=1e-5, num_classes=0, reg_tokens=4, mlp_ratio=5.3375,
            global_pool="", dynamic_img_size=True, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU,
        ),
    ),
    "h_optimus_0": (
        "vit_giant_patch14_reg4_dinov2",
        dict(num_classes=0, img_size=224, global_pool="token", init_values=1e-5,
             dynamic_img_size=True),
    ),
}  # fmt: skip


class _PublishedPooler(nn.Module):
    """CONCH v1.5's AttentionalPooler as published (einsum form, max subtracted)."""

    def __init__(self, d_model: int, context_dim: int, n_head: int, n_queries: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.scale = (d_model // n_head) ** -0.5
        self.heads = n_head
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, d_model * 2, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]  # b 1 n d
        q = self.query[None, None].expand(x.shape[0], x.shape[1], -1, -1)
        x, q = self.ln_k(x), self.to_q(self.ln_q(q))
        k, v = self.to_kv(x).chunk(2, dim=-1)

        def heads(t: torch.Tensor) -> torch.Tensor:  # b t n (h d) -> b h t n d
            b, t_, n, hd = t.shape
            return t.reshape(b, t_, n, self.heads, hd // self.heads).permute(0, 3, 1, 2, 4)

        q, k, v = heads(q) * self.scale, heads(k), heads(v)
        sim = torch.einsum("...id,...jd->...ij", q, k)
        attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
        out = torch.einsum("...ij,...jd->...id", attn, v)  # b h t n d
        b, h, t, n, d = out.shape
        out = out.permute(0, 2, 3, 1, 4).reshape(b, t, n, h * d)
        return self.to_out(out).squeeze(dim=1)


class _PublishedConchTower(nn.Module):
    """CONCH v1.5's vision tower as published: ViT-L/16 trunk (LayerScale init 1.0, 224 grid,
    DINO-style position interpolation), attn_pool_contrast, ln_contrast."""

    def __init__(self, depth: int = 24) -> None:
        super().__init__()
        self.trunk = timm.create_model(
            "vit_large_patch16_224", pretrained=False, img_size=224, init_values=1.0,
            num_classes=0, depth=depth,
        )  # fmt: skip
        self.attn_pool_contrast = _PublishedPooler(768, 1024, 8, 1)
        self.ln_contrast = nn.LayerNorm(768)

    def _interpolate(self, x: torch.Tensor, w: int, h: int) -> torch.Tensor:
        npatch, n = x.shape[1] - 1, self.trunk.pos_embed.shape[1] - 1
        if npatch == n and w == h:
            return self.trunk.pos_embed
        cls_pos, patch_pos = self.trunk.pos_embed[:, 0], self.trunk.pos_embed[:, 1:]
        dim = x.shape[-1]
        w0, h0 = w // 16 + 0.1, h // 16 + 0.1
        patch_pos = F.interpolate(
            patch_pos.reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
            mode="bicubic",
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((cls_pos.unsqueeze(0), patch_pos), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, w, h = x.shape
        self.trunk.patch_embed.strict_img_size = False
        t = self.trunk.patch_embed(x)
        t = torch.cat((self.trunk.cls_token.expand(t.shape[0], -1, -1), t), dim=1)
        t = t + self._interpolate(t, w, h)
        t = self.trunk.norm(self.trunk.blocks(t))
        return self.ln_contrast(self.attn_pool_contrast(t)[:, 0])


def _reference(name: str, depth: int | None = None) -> nn.Module:
    if name == "conch_v15":
        return _PublishedConchTower(depth or 24).eval()
    model, kwargs = _TIMM[name]
    if depth is not None:
        kwargs = {**kwargs, "depth": depth}
    return timm.create_model(model, pretrained=False, **kwargs).eval()


def _reference_embedding(name: str, ref: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = ref(x)
    if name == "virchow2":  # model card: CLS concatenated with the mean of the patch tokens
        return torch.cat([out[:, 0], out[:, 5:].mean(1)], dim=-1)
    return out


def _random_state(ref: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """SYNTHETIC values of the published layout; LayerScale and norms far from their init so
    every block matters."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, t in ref.state_dict().items():
        noise = torch.randn(t.shape, generator=gen)
        scale_like = key.endswith("gamma") or (
            key.endswith("weight") and ("norm" in key or "ln_" in key)
        )
        state[key] = 0.5 + 0.1 * noise if scale_like else 0.05 * noise
    return state


@pytest.mark.parametrize("name", NAMES)
def test_full_depth_layout_is_the_published_one_on_meta(name: str) -> None:
    with torch.device("meta"):
        ref = _reference(name)
        ours = build_architecture(name)
        out = ours(torch.empty(2, 3, encoder_spec(name).input_px, encoder_spec(name).input_px))
    assert tensor_layout(checkpoint_root(ours).state_dict()) == tensor_layout(ref.state_dict())
    assert len(ours.state_dict()) == len(ref.state_dict())  # nothing outside the published file
    assert tuple(out.shape) == (2, encoder_spec(name).embed_dim)


_WRAPPERS = {  # each encoder's file in another published wrapping, and one plain
    "uni": ("bin", "model."),
    "uni2_h": ("bin", "module."),
    "conch_v15": ("bin", "state_dict"),
    "virchow2": ("safetensors", "trunk."),
    "h_optimus_0": ("bin", "module.+state_dict"),
}


def _write(state: dict[str, torch.Tensor], path: Path, wrapper: str) -> Path:
    for prefix in ("module.", "model.", "trunk."):
        if prefix in wrapper:
            state = {prefix + k: v for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state} if "state_dict" in wrapper else state, path)
    return path


@pytest.mark.parametrize("name", NAMES)
def test_published_layout_loads_strictly_and_computes_the_published_embedding(
    name: str, tmp_path: Path
) -> None:
    with torch.device("meta"):
        ref = _reference(name, DEPTH)
    state = _random_state(ref, seed=NAMES.index(name))
    ref.load_state_dict(state, strict=True, assign=True)
    suffix, wrapper = _WRAPPERS[name]
    path = _write(state, tmp_path / f"{name}.{suffix}", wrapper)
    enc = load_encoder(name, path, depth=DEPTH)
    assert not enc.spec.untrained and enc.spec == encoder_spec(name)
    s = enc.spec.input_px
    x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _reference_embedding(name, ref, x)
        got = enc.module(x)
    assert got.shape == (1, enc.spec.embed_dim)
    assert float((got - want).abs().max()) <= 1e-5
    # And in plain published form (no wrapper), the other file format.
    plain = tmp_path / (f"{name}.bin" if suffix == "safetensors" else f"{name}.safetensors")
    load_encoder(name, _write(state, plain, ""), depth=DEPTH)


@pytest.mark.parametrize("name", NAMES)
def test_a_corrupted_copy_is_refused_naming_what_differs(name: str, tmp_path: Path) -> None:
    with torch.device("meta"):
        layout = tensor_layout(_reference(name, DEPTH).state_dict())
    state = {k: torch.zeros(shape) for k, shape in layout.items()}
    keys = list(state)
    dropped, renamed, reshaped = keys[-1], keys[-2], keys[0]
    del state[dropped]
    state[renamed.replace("blocks.", "block.") + "_x"] = state.pop(renamed)
    state[reshaped] = torch.zeros(3, 5)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointLayoutError) as err:
        load_encoder(name, tmp_path / "bad.safetensors", depth=DEPTH)
    msg = str(err.value)
    assert f"looks like {PUBLISHED[name].title} ({PUBLISHED[name].hub}" in msg
    assert "(the one asked for)" in msg
    assert (
        f"2 missing: {dropped!r}, {renamed!r}" in msg
        or f"2 missing: {renamed!r}, {dropped!r}" in msg
    )
    assert f"1 unexpected: {renamed.replace('blocks.', 'block.') + '_x'!r}" in msg
    assert f"1 shape mismatch: tensor {reshaped!r} has shape (3, 5) in the file" in msg
    assert isinstance(err.value, WeightsError)


@pytest.mark.parametrize(("file_of", "given"), [("uni", "virchow2"), ("conch_v15", "uni"),
                                                 ("h_optimus_0", "uni2_h")])  # fmt: skip
def test_the_wrong_published_file_is_named(file_of: str, given: str, tmp_path: Path) -> None:
    with torch.device("meta"):
        layout = tensor_layout(_reference(file_of, DEPTH).state_dict())
    save_file({k: torch.zeros(s) for k, s in layout.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointLayoutError, match=rf"pass the encoder name '{file_of}'") as err:
        load_encoder(given, tmp_path / "w.safetensors")
    assert f"looks like {PUBLISHED[file_of].title} (" in str(err.value)


def test_generic_timm_form_loads_any_timm_vit(tmp_path: Path) -> None:
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=DEPTH)
    state = _random_state(ref.eval(), seed=9)
    ref.load_state_dict(state)
    save_file(state, str(tmp_path / "model.safetensors"))
    enc = load_encoder(
        "timm:vit_small_patch16_224", tmp_path / "model.safetensors",
        arch_kwargs={"num_classes": 0}, depth=DEPTH,
    )  # fmt: skip
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert float((enc.module(x) - ref(x)).abs().max()) <= 1e-5
    assert enc.spec.embed_dim == 384 and enc.spec.input_px == 224
    assert enc.spec.mean == tuple(ref.pretrained_cfg["mean"])
    with pytest.raises(CheckpointLayoutError, match="missing"):
        load_encoder("timm:vit_small_patch16_224", tmp_path / "model.safetensors")


def test_conch_position_embedding_on_another_grid_is_resampled_as_published(
    tmp_path: Path,
) -> None:
    """CONCH v1.5's published loader resamples a `trunk.pos_embed` stored on another grid
    (e.g. 448 px: 28x28) to the trunk's 14x14 with timm's resample_abs_pos_embed, bilinear,
    no antialiasing; the loader does the same, then loads strictly."""
    from timm.layers import resample_abs_pos_embed

    with torch.device("meta"):
        ref = _reference("conch_v15", DEPTH)
    state = _random_state(ref, seed=5)
    stored = dict(state, **{"trunk.pos_embed": 0.05 * torch.randn(1, 1 + 28 * 28, 1024)})
    state["trunk.pos_embed"] = resample_abs_pos_embed(
        stored["trunk.pos_embed"], new_size=[14, 14], num_prefix_tokens=1,
        interpolation="bilinear", antialias=False,
    )  # fmt: skip
    ref.load_state_dict(state, strict=True, assign=True)
    torch.save(stored, tmp_path / "pytorch_model_vision.bin")
    enc = load_encoder("conch_v15", tmp_path / "pytorch_model_vision.bin", depth=DEPTH)
    x = torch.randn(1, 3, 448, 448, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert float((enc.module(x) - ref(x)).abs().max()) <= 1e-5
