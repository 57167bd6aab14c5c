"""Triton (real tritonserver, python backend): a python model and an ensemble answer over
gRPC, and python-backend models import the project's packages from the venv."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from histoprompt.core.names import TOPIC_INCOMING
from histoprompt.stack import StackHandle

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def triton(
    stack: StackHandle, stack_test_models: tuple[str, ...]
) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    try:
        yield client
    finally:
        client.close()


def _infer(client: grpcclient.InferenceServerClient, model: str, x: np.ndarray) -> np.ndarray:
    inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("OUTPUT")])
    return result.as_numpy("OUTPUT")


def test_python_model_and_ensemble_over_grpc(triton: grpcclient.InferenceServerClient) -> None:
    assert triton.is_model_ready("stack_add_one")
    assert triton.is_model_ready("stack_add_two")
    x = np.random.default_rng(3).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(_infer(triton, "stack_add_one", x), x + 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(_infer(triton, "stack_add_two", x), x + 2.0, rtol=0, atol=1e-6)


def test_python_backend_imports_project_venv(
    triton: grpcclient.InferenceServerClient, repo_root: Path, stack: StackHandle
) -> None:
    dummy = grpcclient.InferInput("DUMMY", [1], "INT32")
    dummy.set_data_from_numpy(np.zeros(1, dtype=np.int32))
    info = triton.infer("stack_import_probe", [dummy]).as_numpy("INFO")
    names_file, ort_version, topic, s3_endpoint = (v.decode() for v in info)
    assert Path(names_file).resolve() == (
        repo_root / "core" / "src" / "histoprompt" / "core" / "names.py"
    )
    import onnxruntime

    assert ort_version == onnxruntime.__version__
    assert topic == TOPIC_INCOMING
    # The model's own ConnectionSettings() sees the stack's S3, through Triton's environment.
    assert s3_endpoint == stack.settings.s3_endpoint


def test_unknown_model_load_fails(stack: StackHandle) -> None:
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    with pytest.raises(InferenceServerException, match="stack_no_such_model"):
        client.load_model("stack_no_such_model")
