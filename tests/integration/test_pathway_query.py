"""pathway_query through the real Triton: reference loaded from S3 at model load, Hallmark and
JSON gene sets, and a bad gene set that fails its own request only (SYNTHETIC reference)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from queue import Queue

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from histoprompt.core import names
from histoprompt.core.pathway_engine import PathwayEngine
from histoprompt.core.reference import (
    ReferenceDB,
    build_reference,
    linear_embed_fn,
    save_reference_s3,
    synthetic_reference_inputs,
)
from histoprompt.core.s3 import make_minio
from histoprompt.stack import StackHandle

pytestmark = pytest.mark.integration

REFERENCE_NAME = "itest-synthetic"


def _slide_dim(config: str) -> int:
    """E from the generated config: SLIDE_EMBEDDING dims [ -1, E ]."""
    block = config[config.index(f'"{names.TENSOR_SLIDE_EMBEDDING}"') :]
    dims = re.search(r"dims:\s*\[([^\]]*)\]", block)
    assert dims is not None, "pathway_query config has no SLIDE_EMBEDDING dims"
    return int(dims.group(1).split(",")[-1])


def _set_param(config: str, key: str, value: str) -> str:
    pattern = rf'(key:\s*"{key}"\s*value:\s*\{{\s*string_value:\s*)"[^"]*"'
    new, n = re.subn(pattern, rf'\1"{value}"', config)
    if n == 0:
        new = (
            config
            + f'\nparameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}\n'
        )
    return new


@pytest.fixture(scope="module")
def served(stack: StackHandle, repo_root: Path) -> Iterator[tuple[ReferenceDB, str]]:
    src = repo_root / "model_repository" / names.MODEL_PATHWAY_QUERY
    assert (src / "1" / "model.py").is_file(), "model_repository/pathway_query is missing"
    config = (src / "config.pbtxt").read_text()
    dim = _slide_dim(config)
    inputs = synthetic_reference_inputs(300, n_genes=2000, seed=7)
    genes = list(inputs.expression.columns)
    ref = build_reference(
        inputs.expression,
        inputs.metadata,
        linear_embed_fn(len(genes), dim),
        genes,
        name=REFERENCE_NAME,
        synthetic=True,
    )
    bucket = stack.settings.models_bucket
    uri = save_reference_s3(ref, make_minio(stack.settings), bucket)
    assert uri == f"s3://{bucket}/references/{REFERENCE_NAME}/{ref.version}/"
    target = stack.model_repository / names.MODEL_PATHWAY_QUERY
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
    model_uri = f"s3://{bucket}/references/{REFERENCE_NAME}"
    (target / "config.pbtxt").write_text(_set_param(config, "reference_uri", model_uri))
    # The python model reads S3 settings like every part does (HISTOPROMPT_* env, else
    # ./stack.env); Triton's environment carries no HISTOPROMPT_* here, so give its working
    # directory the stack's env file, as the Helm chart gives the pod the env vars.
    triton_cwd = stack.state_dir / "triton"
    if triton_cwd.is_dir():
        shutil.copyfile(stack.env_file, triton_cwd / "stack.env")
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    try:
        client.load_model(names.MODEL_PATHWAY_QUERY)
        assert client.is_model_ready(names.MODEL_PATHWAY_QUERY)
        yield ref, stack.triton_grpc
    finally:
        try:
            client.unload_model(names.MODEL_PATHWAY_QUERY)
        finally:
            client.close()


def _inputs(emb: np.ndarray, sets: list[str], method: str | None = None) -> list:  # type: ignore[type-arg]
    e = grpcclient.InferInput(names.TENSOR_SLIDE_EMBEDDING, list(emb.shape), "FP32")
    e.set_data_from_numpy(emb.astype(np.float32))
    g = grpcclient.InferInput(names.TENSOR_GENE_SETS, [len(sets)], "BYTES")
    g.set_data_from_numpy(np.array([s.encode() for s in sets], dtype=np.object_))
    out = [e, g]
    if method is not None:
        m = grpcclient.InferInput(names.TENSOR_METHOD, [1], "BYTES")
        m.set_data_from_numpy(np.array([method.encode()], dtype=np.object_))
        out.append(m)
    return out


def _outputs() -> list[grpcclient.InferRequestedOutput]:
    return [
        grpcclient.InferRequestedOutput(names.TENSOR_SCORES),
        grpcclient.InferRequestedOutput(names.TENSOR_COVERAGE),
    ]


def _json_set(ref: ReferenceDB) -> str:
    genes = list(ref.genes[200:230]) + ["NOT_A_GENE_1", "NOT_A_GENE_2"]
    return json.dumps({"name": "itest_signature", "genes": genes})


def test_hallmark_and_json_sets_equal_the_in_process_engine(
    served: tuple[ReferenceDB, str],
) -> None:
    ref, url = served
    rng = np.random.default_rng(0)
    emb = ref.embeddings[:3] + 0.05 * rng.normal(size=(3, ref.embed_dim)).astype(np.float32)
    sets = ["HALLMARK_HYPOXIA", _json_set(ref), "e2f_targets"]
    with grpcclient.InferenceServerClient(url) as client:
        res = client.infer(names.MODEL_PATHWAY_QUERY, _inputs(emb, sets), outputs=_outputs())
    scores, coverage = res.as_numpy(names.TENSOR_SCORES), res.as_numpy(names.TENSOR_COVERAGE)
    expected = PathwayEngine.for_reference(ref).query(emb, sets)
    assert expected.ok
    assert scores.shape == (3, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected.scores, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(coverage, expected.coverage, rtol=1e-6)
    assert coverage[1] == pytest.approx(30 / 32)
    assert np.isfinite(scores).all()


def test_a_bad_gene_set_fails_only_its_own_request(served: tuple[ReferenceDB, str]) -> None:
    ref, url = served
    emb = ref.embeddings[:2]
    requests = {
        "good_hallmark": ["HALLMARK_HYPOXIA"],
        "bad": ["HALLMARK_HYPOXIA", "HALLMARK_HYPOXA", _json_set(ref)],
        "good_json": [_json_set(ref)],
        "malformed": ['{"name": "x", "genes": ['],
        "too_few": [json.dumps({"name": "few", "genes": list(ref.genes[:4])})],
    }
    done: Queue[tuple[str, object, object]] = Queue()
    with grpcclient.InferenceServerClient(url) as client:
        for tag, sets in requests.items():
            client.async_infer(
                names.MODEL_PATHWAY_QUERY,
                _inputs(emb, sets),
                callback=lambda result, error, tag=tag: done.put((tag, result, error)),
                outputs=_outputs(),
            )
        got = {
            tag: (result, error) for tag, result, error in (done.get(timeout=60) for _ in requests)
        }
    for tag in ("good_hallmark", "good_json"):
        result, error = got[tag]
        assert error is None, f"{tag}: {error}"
        assert np.isfinite(result.as_numpy(names.TENSOR_SCORES)).all()  # type: ignore[attr-defined]
    for tag, fragment in (
        ("bad", "did you mean HALLMARK_HYPOXIA"),
        ("malformed", "not valid JSON"),
        ("too_few", "only 4 of 4 genes"),
    ):
        result, error = got[tag]
        assert result is None and isinstance(error, InferenceServerException), tag
        assert "INVALID_ARG" in str(error.status()), (tag, error.status())
        assert fragment in error.message(), (tag, error.message())


def test_method_input_and_unknown_method(served: tuple[ReferenceDB, str]) -> None:
    ref, url = served
    with grpcclient.InferenceServerClient(url) as client:
        ok = client.infer(
            names.MODEL_PATHWAY_QUERY,
            _inputs(ref.embeddings[:1], ["HALLMARK_HYPOXIA"], "soft_knn"),
            outputs=_outputs(),
        )
        assert ok.as_numpy(names.TENSOR_SCORES).shape == (1, 1)
        with pytest.raises(InferenceServerException, match="unknown method 'magic'"):
            client.infer(
                names.MODEL_PATHWAY_QUERY,
                _inputs(ref.embeddings[:1], ["HALLMARK_HYPOXIA"], "magic"),
                outputs=_outputs(),
            )
