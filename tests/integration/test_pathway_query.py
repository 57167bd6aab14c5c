"""pathway_query through the real Triton: reference loaded from S3 at model load, Hallmark and
JSON gene sets, and a bad gene set that fails its own request only (SYNTHETIC reference)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from queue import Queue

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from histoprompt.core import names
from histoprompt.core.pathway_engine import PathwayEngine
from histoprompt.core.reference import ReferenceDB
from histoprompt.core.s3 import make_minio
from histoprompt.stack import StackHandle

pytestmark = pytest.mark.integration

REFERENCE_NAME = "itest-synthetic"
# Its own model name: the repository's pathway_query (and slide_to_pathways, which calls it)
# stay loaded as other modules left them.
MODEL = "pathway_query_test_ref"


@pytest.fixture(scope="module")
def served(stack: StackHandle) -> Iterator[tuple[ReferenceDB, str]]:
    # tests/ is on sys.path under pytest: tests/conftest.py has no package above it.
    from helpers.prompting import prepare_pathway_query

    prepared = prepare_pathway_query(
        stack.settings,
        stack.model_repository,
        model_name=MODEL,
        reference_name=REFERENCE_NAME,
        n_samples=300,
        n_genes=2000,
        seed=7,
    )
    ref = prepared.ref
    bucket = stack.settings.models_bucket
    assert prepared.saved_uri == f"s3://{bucket}/references/{REFERENCE_NAME}/{ref.version}/"
    assert prepared.reference_uri == f"s3://{bucket}/references/{REFERENCE_NAME}"
    # The python model reads S3 settings from HISTOPROMPT_* env, which the stack gives Triton.
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    try:
        client.load_model(MODEL)
        assert client.is_model_ready(MODEL)
        yield ref, stack.triton_grpc
    finally:
        try:
            client.unload_model(MODEL)
        finally:
            client.close()
            # Leave the models bucket as found: the CLI names unknown genes from the only
            # reference under references/ when the served one is not on S3.
            minio = make_minio(stack.settings)
            for obj in minio.list_objects(
                bucket, prefix=f"references/{REFERENCE_NAME}/", recursive=True
            ):
                minio.remove_object(bucket, obj.object_name)


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
        res = client.infer(MODEL, _inputs(emb, sets), outputs=_outputs())
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
                MODEL,
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
            MODEL,
            _inputs(ref.embeddings[:1], ["HALLMARK_HYPOXIA"], "soft_knn"),
            outputs=_outputs(),
        )
        assert ok.as_numpy(names.TENSOR_SCORES).shape == (1, 1)
        with pytest.raises(InferenceServerException, match="unknown method 'magic'"):
            client.infer(
                MODEL,
                _inputs(ref.embeddings[:1], ["HALLMARK_HYPOXIA"], "magic"),
                outputs=_outputs(),
            )
