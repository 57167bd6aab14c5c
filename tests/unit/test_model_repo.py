"""Model-repository generator: every config parses, flavours, checked-in repo is current."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format

from histoprompt.core import names
from histoprompt.core.triton_params import encoder_spec_from_params
from histoprompt.export.bundle import demo_card, demo_config
from histoprompt.export.model_repo import (
    Flavor,
    TileEncoderPlatform,
    install_artifacts,
    parse_config,
    render,
    write_repository,
)
from histoprompt.serving.context import ModelContext

REPO = Path(__file__).resolve().parents[2] / "model_repository"
ALL_MODELS = set(names.ALL_MODELS)


@pytest.mark.parametrize("flavor", list(Flavor))
def test_every_model_has_a_config_that_triton_protobuf_parses(flavor: Flavor) -> None:
    layout = render(demo_card(demo_config()), flavor)
    assert set(layout.configs) == ALL_MODELS
    for model, text in layout.configs.items():
        cfg = parse_config(text)
        assert cfg.name == model


def test_checked_in_repository_equals_generator_output(tmp_path: Path) -> None:
    write_repository(render(demo_card(demo_config()), Flavor.cpu), tmp_path)
    generated = {
        p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
    }
    checked_in = {
        p.relative_to(REPO): p.read_bytes()
        for p in REPO.rglob("*")
        if p.is_file()
        and p.name != ".gitignore"
        and (p.name in {"config.pbtxt", "model.py", ".gitkeep"})
        and "__pycache__" not in p.parts
    }
    assert sorted(checked_in) == sorted(generated), "run: histoprompt-export model-repo"
    for rel, data in generated.items():
        assert checked_in[rel] == data, f"{rel} is stale; run: histoprompt-export model-repo"


def test_gpu_flavour_uses_tensorrt_gpu_instances_and_bounded_batching() -> None:
    card = demo_card(demo_config())
    gpu = {m: parse_config(t) for m, t in render(card, Flavor.gpu).configs.items()}
    enc = gpu[names.MODEL_TILE_ENCODER]
    assert enc.platform == "tensorrt_plan" and enc.default_model_filename == "model.plan"
    assert enc.instance_group[0].kind == enc.instance_group[0].KIND_GPU
    assert list(enc.dynamic_batching.preferred_batch_size) == [64, 128, 256]
    assert 0 < enc.dynamic_batching.max_queue_delay_microseconds <= 10_000
    assert max(enc.dynamic_batching.preferred_batch_size) <= enc.max_batch_size
    assert gpu[names.MODEL_SLIDE_EMBED].platform == "onnxruntime_onnx"
    fallback = parse_config(
        render(card, Flavor.gpu, TileEncoderPlatform.onnx).configs[names.MODEL_TILE_ENCODER]
    )
    assert fallback.platform == "onnxruntime_onnx"
    cpu = {m: parse_config(t) for m, t in render(card, Flavor.cpu).configs.items()}
    assert cpu[names.MODEL_TILE_ENCODER].backend == "python"


def test_ensembles_and_python_models_are_identical_in_both_flavours() -> None:
    card = demo_card(demo_config())
    cpu, gpu = render(card, Flavor.cpu), render(card, Flavor.gpu)
    for model in (names.MODEL_SLIDE_TO_PATHWAYS, names.MODEL_PATHWAY_QUERY):
        assert cpu.configs[model] == gpu.configs[model]
    gpu_steps = parse_config(gpu.configs[names.MODEL_PATCH_EMBED]).ensemble_scheduling.step
    assert [s.model_name for s in gpu_steps] == [
        names.MODEL_TILE_PREPROCESS,
        names.MODEL_TILE_ENCODER,
    ]


def test_cpu_patch_embed_is_one_step_whose_tile_encoder_takes_tiles_and_the_spec() -> None:
    """cpu flavour (issue 15): tile_encoder preprocesses, so no float32 tensor passes between
    two python stubs; patch_embed's contract (TILES in, TILE_EMBEDDING out) is unchanged."""
    from tritonclient.grpc import model_config_pb2

    card = demo_card(demo_config())
    cpu, gpu = render(card, Flavor.cpu), render(card, Flavor.gpu)
    ens = parse_config(cpu.configs[names.MODEL_PATCH_EMBED])
    (step,) = ens.ensemble_scheduling.step
    assert step.model_name == names.MODEL_TILE_ENCODER
    assert dict(step.input_map) == {names.TENSOR_TILES: names.TENSOR_TILES}
    assert dict(step.output_map) == {names.TENSOR_TILE_EMBEDDING: names.TENSOR_TILE_EMBEDDING}
    gpu_ens = parse_config(gpu.configs[names.MODEL_PATCH_EMBED])
    assert list(ens.input) == list(gpu_ens.input) and list(ens.output) == list(gpu_ens.output)
    enc = parse_config(cpu.configs[names.MODEL_TILE_ENCODER])
    assert [(i.name, i.data_type, list(i.dims)) for i in enc.input] == [
        (names.TENSOR_TILES, model_config_pb2.DataType.Value("TYPE_UINT8"), [-1, -1, 3])
    ]
    ctx = ModelContext.from_config(
        json_format.MessageToDict(enc, preserving_proto_field_name=True), Path("."), "x"
    )
    assert encoder_spec_from_params(ctx.parameters) == card.encoder
    gpu_enc = parse_config(gpu.configs[names.MODEL_TILE_ENCODER])
    assert [i.name for i in gpu_enc.input] == [names.TENSOR_PIXELS]


def test_tile_preprocess_config_carries_the_encoder_spec_and_version() -> None:
    card = demo_card(demo_config())
    cfg = parse_config(render(card, Flavor.cpu).configs[names.MODEL_TILE_PREPROCESS])
    ctx = ModelContext.from_config(
        json_format.MessageToDict(cfg, preserving_proto_field_name=True), Path("."), "x"
    )
    assert encoder_spec_from_params(ctx.parameters) == card.encoder
    assert ctx.parameters["model_version"] == card.version
    assert card.version.startswith("tiny-") and len(card.version) == len("tiny-") + 8
    assert ctx.parameters["synthetic"] == "true" and ctx.parameters["untrained"] == "true"


def test_model_py_files_are_thin() -> None:
    for model, text in render(demo_card(demo_config()), Flavor.cpu).model_py.items():
        assert "histoprompt.serving.triton_adapter" in text
        assert f'model_name = "{model}"' in text
        assert len(text.splitlines()) < 20


def test_install_artifacts_places_files_in_version_folders(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    def graph(name: str) -> bytes:
        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("X", "Y")]
        node = helper.make_node("Identity", ["X"], ["Y"])
        model = helper.make_model(helper.make_graph([node], name, io[:1], io[1:]))
        return model.SerializeToString()

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for f in ("model_card.json", "encoder.json"):
        (bundle / f).write_text(f)
    for f in ("tile_encoder.onnx", "slide_embed.onnx"):
        (bundle / f).write_bytes(graph(f))
    (bundle / "reference" / "demo").mkdir(parents=True)
    (bundle / "reference" / "demo" / "latest.json").write_text("{}")
    placed = install_artifacts(bundle, tmp_path / "repo")
    for model, f in (("tile_encoder", "tile_encoder.onnx"), ("slide_embed", "slide_embed.onnx")):
        copied = (tmp_path / f"repo/{model}/1/model.onnx").read_bytes()
        assert copied == (bundle / f).read_bytes()
        assert onnx.load_from_string(copied).graph.name == f
    assert (tmp_path / "repo/pathway_query/1/reference/demo/latest.json").is_file()
    # 4 files (no rna_embed.onnx in this bundle; model_card.json twice) + reference/
    assert len(placed) == 6
