"""ONNX export of the full-size encoder classes with dynamic batch, on 2-block configurations.

ViT-L (UNI), ViT-H (Virchow2), ViT-g (H-optimus-0) and CONCH v1.5's tower (ViT-L at 448 px
with its position interpolation and attention-pooling head) export with their full width and
two blocks (RANDOM weights: the layout and the operators, not the published values) and must
agree with torch within the project's parity bounds (max abs 1e-4, cosine 0.9999); the same
graph then runs at another batch size. Full depth: tests/perf/bench_onnx_export.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from histoprompt.export.encoders import load_encoder
from histoprompt.export.errors import ExportError
from histoprompt.export.onnx_export import MAX_ABS_ERR, MIN_COSINE, export_and_check

DEPTH = 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "width"),
    [("uni", 1024), ("virchow2", 2560), ("h_optimus_0", 1536), ("conch_v15", 768)],
)
def test_full_width_encoder_exports_with_dynamic_batch_and_parity(
    name: str, width: int, tmp_path: Path
) -> None:
    enc = load_encoder(name, allow_random=True, depth=DEPTH)
    s = enc.spec.input_px
    path = tmp_path / f"{name}.onnx"
    record = export_and_check(
        name,
        enc.module,
        path,
        input_name="PIXELS",
        output_names=["TILE_EMBEDDING"],
        dynamic_axis="batch",
        shapes=[(2, 3, s, s)],
    )
    assert record.passed, record
    assert record.max_abs_err <= MAX_ABS_ERR and record.min_cosine >= MIN_COSINE
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(sess.get_inputs()[0].shape[0], str)  # the batch axis is symbolic
    assert sess.get_outputs()[0].shape[1] == width == enc.spec.embed_dim
    x = np.random.default_rng(0).standard_normal((2, 3, s, s)).astype(np.float32)  # as parity
    two = sess.run(None, {"PIXELS": x})[0]
    one = sess.run(None, {"PIXELS": x[1:]})[0]
    assert one.shape == (1, width)
    assert float(np.abs(one[0] - two[1]).max()) <= MAX_ABS_ERR


def test_weights_past_the_protobuf_limit_go_to_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full-depth ViT-H (2.5 GB) and ViT-g (4.5 GB) exceed protobuf's 2 GB: their weights go
    to an external-data file next to the graph; the same path, forced here on `tiny`."""
    from histoprompt.export import onnx_export

    monkeypatch.setattr(onnx_export, "_EXTERNAL_DATA_BYTES", 0)
    enc = load_encoder("tiny")
    record = onnx_export.export_tile_encoder(enc.module, 64, tmp_path / "model.onnx")
    assert record.passed
    assert [p.name for p in tmp_path.iterdir() if p.name != "model.onnx"]  # the data file
    assert (tmp_path / "model.onnx").stat().st_size < 1_000_000


def test_a_graph_with_external_data_is_served_with_its_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model repository copies the external-data file next to the renamed `model.onnx`,
    so a full-size ViT-H/ViT-g tile encoder loads in Triton; ORT output equals the export's."""
    from histoprompt.core import names
    from histoprompt.export import onnx_export
    from histoprompt.export.model_repo import write_encoder_repository

    monkeypatch.setattr(onnx_export, "_EXTERNAL_DATA_BYTES", 0)
    enc = load_encoder("tiny")
    exported = tmp_path / "export" / "tile_encoder.onnx"
    onnx_export.export_tile_encoder(enc.module, 64, exported)
    data_files = [p.name for p in exported.parent.iterdir() if p != exported]
    assert data_files
    repo = tmp_path / "repo"
    write_encoder_repository(enc.spec, exported, repo)
    version = repo / names.MODEL_TILE_ENCODER / "1"
    assert {p.name for p in version.iterdir()} >= {"model.onnx", *data_files}
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    want = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got.run(None, {"PIXELS": x})[0], want.run(None, {"PIXELS": x})[0])
    (exported.parent / data_files[0]).unlink()
    with pytest.raises(ExportError, match="missing"):
        write_encoder_repository(enc.spec, exported, tmp_path / "repo2")
