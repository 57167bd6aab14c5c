"""Encoders and weight loading: registry, seeded encoders, weight checks, hub names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from histoprompt.core.errors import ConfigError
from histoprompt.export.encoder_specs import encoder_names, encoder_spec
from histoprompt.export.encoders import build_architecture, load_encoder
from histoprompt.export.errors import HubNameError, UnknownEncoderError, WeightsError


def test_registry_has_the_required_encoders_with_their_contract() -> None:
    published = {"uni", "uni2_h", "conch_v15", "virchow2", "h_optimus_0"}
    assert published | {"vit_small", "vit_base", "tiny", "null"} <= set(encoder_names())
    assert encoder_spec("uni").embed_dim == 1024 and encoder_spec("uni").input_px == 224
    assert encoder_spec("conch_v15").tile_px == 512
    assert encoder_spec("virchow2").embed_dim == 2560
    assert encoder_spec("uni2_h").embed_dim == encoder_spec("h_optimus_0").embed_dim == 1536
    assert encoder_spec("h_optimus_0").mean == (0.707223, 0.578729, 0.703617)
    assert encoder_spec("conch_v15").input_px == 448 and encoder_spec("conch_v15").embed_dim == 768
    assert encoder_spec("tiny").untrained and encoder_spec("null").untrained


def test_unknown_encoder_names_the_known_ones() -> None:
    with pytest.raises(UnknownEncoderError, match="known encoders: uni"):
        encoder_spec("resnet9000")
    with pytest.raises(ConfigError):
        load_encoder("resnet9000")


@pytest.mark.parametrize("name", ["uni", "uni2_h", "conch_v15", "virchow2", "h_optimus_0"])
def test_large_architectures_have_the_declared_width_on_meta_device(name: str) -> None:
    spec = encoder_spec(name)
    with torch.device("meta"):
        module = build_architecture(name)
        out = module(torch.empty(2, 3, spec.input_px, spec.input_px))
    assert tuple(out.shape) == (2, spec.embed_dim)


@pytest.mark.parametrize("name", ["tiny", "null"])
def test_seeded_encoders_are_deterministic_and_labelled_untrained(name: str) -> None:
    a, b = load_encoder(name, seed=3), load_encoder(name, seed=3)
    c = load_encoder(name, seed=4)
    s = a.spec.input_px
    x = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ya, yb, yc = a.module(x), b.module(x), c.module(x)
    assert ya.shape == (2, a.spec.embed_dim)
    assert torch.equal(ya, yb)
    assert not torch.allclose(ya, yc)
    assert a.spec.untrained
    assert not any(p.requires_grad for p in a.module.parameters())


def test_large_encoder_without_weights_is_refused() -> None:
    with pytest.raises(WeightsError, match="needs its weights"):
        load_encoder("uni")


@pytest.mark.parametrize("ref", ["hf-hub:MahmoodLab/UNI", "MahmoodLab/UNI"])
def test_hub_names_raise_with_prefetch_instructions(ref: str) -> None:
    with pytest.raises(HubNameError, match="huggingface-cli download MahmoodLab/UNI"):
        load_encoder("uni", ref)


def _tiny_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in build_architecture("tiny", seed=7).state_dict().items()}


def test_safetensors_and_torch_files_load_and_match(tmp_path: Path) -> None:
    state = _tiny_state()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    x = torch.randn(1, 3, 64, 64)
    ref = build_architecture("tiny", seed=7)
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pt"):
        enc = load_encoder("tiny", path, seed=0)
        with torch.no_grad():
            assert torch.allclose(enc.module(x), ref(x))
        assert enc.spec.untrained  # tiny stays labelled untrained, whatever file it loads
        assert enc.weights_digest != "seed0"


def test_wrong_shape_is_rejected_with_the_tensor_name(tmp_path: Path) -> None:
    state = _tiny_state()
    state["trunk.head.weight"] = torch.zeros(1)  # not in the architecture
    key = "trunk.patch_embed.proj.weight"
    state[key] = torch.zeros(7, 3, 8, 8)
    del state["trunk.head.weight"]
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match="patch_embed.proj.weight.*shape"):
        load_encoder("tiny", tmp_path / "bad.safetensors")


def test_nan_in_checkpoint_is_rejected(tmp_path: Path) -> None:
    state = _tiny_state()
    state["trunk.cls_token"][0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(WeightsError, match="cls_token.*NaN"):
        load_encoder("tiny", tmp_path / "nan.pt")


def test_weights_of_another_architecture_are_rejected(tmp_path: Path) -> None:
    save_file(build_architecture("null").state_dict(), str(tmp_path / "null.safetensors"))
    with pytest.raises(WeightsError, match="missing"):
        load_encoder("tiny", tmp_path / "null.safetensors")


def test_missing_and_garbage_files_have_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_encoder("tiny", tmp_path / "absent.safetensors")
    (tmp_path / "garbage.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_encoder("tiny", tmp_path / "garbage.bin")


def test_a_missing_relative_weight_file_is_not_mistaken_for_a_hub_name() -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_encoder("tiny", "weights/tiny.safetensors")
