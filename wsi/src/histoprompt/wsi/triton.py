"""Triton over async gRPC: the served encoder's spec, batched patch_embed, slide_to_pathways.

UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED, and a model still loading ("unknown
model", "not ready"), are retried with exponential backoff,
`attempts` tries per call; other errors are the request's own and fail the slide. The ingest
service builds its client with one try per call: it retries whole deliveries instead
(histoprompt.ingest.handler), so retries never nest and its DLQ `attempts` are all there were.
`histoprompt predict`, which has no retry of its own, uses two tries per call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from histoprompt.core import names
from histoprompt.core.errors import TransientError
from histoprompt.core.modelspec import EncoderSpec
from histoprompt.core.triton_params import EncoderParamsError, encoder_spec_from_params
from histoprompt.wsi.errors import SlideError

T = TypeVar("T")
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED")
# What Triton answers while a model is (re)loading: a restarted server before its models are
# loaded, a repository update. Transient, like UNAVAILABLE: the slide is not at fault (the
# chaos test's Triton restart turned these into permanent `failed` results).
MODEL_LOADING = ("unknown model", "is not ready", "has no available versions")


@dataclass(frozen=True)
class ServedModel:
    """What Triton serves: the encoder contract and the version stamped into results."""

    spec: EncoderSpec
    version: str
    encoder: str
    synthetic: bool
    pathway_method: str
    # patch_embed's max_batch_size: Triton rejects a request with more tiles.
    max_batch_size: int


def _config(config: dict[str, Any]) -> dict[str, Any]:
    # get_model_config(as_json=True) wraps the ModelConfig in {"config": ...}.
    inner: dict[str, Any] = config.get("config", config)
    return inner


def _params(config: dict[str, Any]) -> dict[str, str]:
    raw = _config(config).get("parameters", {})
    return {k: str(v.get("string_value", "")) for k, v in raw.items()}


def served_outputs(config: dict[str, Any], wanted: Sequence[str]) -> tuple[str, ...]:
    """Those of `wanted` that a model config (get_model_config as_json) lists as outputs."""
    have = {str(o.get("name", "")) for o in _config(config).get("output", [])}
    return tuple(n for n in wanted if n in have)


def served_model_from_config(
    config: dict[str, Any], pathway_config: dict[str, Any], patch_embed_config: dict[str, Any]
) -> ServedModel:
    """tile_preprocess's parameters (the EncoderSpec), pathway_query's default method and
    patch_embed's max_batch_size, which bounds the tiles of one patch_embed request."""
    from histoprompt.core.pathway_engine import DEFAULT_METHOD

    p = _params(config)
    try:
        spec = encoder_spec_from_params(p)
    except EncoderParamsError as err:
        raise TransientError(
            f"{names.MODEL_TILE_PREPROCESS} config: {err}", code="model_config"
        ) from err
    max_batch = int(_config(patch_embed_config).get("max_batch_size", 0))
    if max_batch < 1:
        raise TransientError(
            f"{names.MODEL_PATCH_EMBED} config has no batching (max_batch_size {max_batch})",
            code="model_config",
        )
    method = _params(pathway_config).get("default_method") or DEFAULT_METHOD
    return ServedModel(
        spec=spec,
        version=p.get("model_version") or "unversioned",
        encoder=spec.name,
        synthetic=p.get("synthetic", "false") == "true",
        pathway_method=method,
        max_batch_size=max_batch,
    )


def _status(err: BaseException) -> str:
    status = getattr(err, "status", None)
    text = str(status() if callable(status) else status or "")
    return text.rsplit(".", 1)[-1]


async def with_retries(
    call: Callable[[], Awaitable[T]], *, attempts: int, base_s: float, what: str
) -> T:
    """Run `call`, retrying retryable Triton errors with exponential backoff."""
    from tritonclient.utils import InferenceServerException

    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except InferenceServerException as err:
            code = _status(err)
            text = str(err).lower()
            transient = "connect" in text or any(m in text for m in MODEL_LOADING)
            if code not in RETRYABLE and not transient:
                raise SlideError(
                    f"{what} rejected the request: {err.message()}", code="infer_error"
                ) from err
            if attempt == attempts:
                raise TransientError(
                    f"{what}: Triton {code or 'unreachable'}", code="triton_unavailable"
                ) from err
            await asyncio.sleep(base_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def channel_args() -> list[tuple[str, Any]]:
    """tritonclient's default channel options plus the round_robin load-balancing policy:
    a `dns:///<headless Service>:8001` target resolves to every ready Triton replica and
    requests rotate over them (pick_first, gRPC's default, would pin one replica)."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.lb_policy_name", "round_robin"),
    ]


class TritonClient:
    """One aio gRPC channel per service; requests from many slides share it, balanced
    round-robin over the addresses the URL resolves to (see channel_args)."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        attempts: int,
        base_s: float,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        """`tls`: ConnectionSettings.triton_grpc_options() (ssl, root_certificates)."""
        import tritonclient.grpc.aio as grpcaio

        self._client: Any = grpcaio.InferenceServerClient(
            url, channel_args=channel_args(), **(tls or {})
        )
        self._timeout = timeout_s
        self._attempts = attempts
        self._base = base_s
        self._readable: tuple[str, ...] | None = None  # slide_to_pathways' readable outputs

    async def close(self) -> None:
        await self._client.close()

    async def ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(names.MODEL_PATCH_EMBED)) and bool(
                await self._client.is_model_ready(names.MODEL_SLIDE_TO_PATHWAYS)
            )
        except Exception:
            return False

    async def served_model(self) -> ServedModel:
        async def fetch() -> ServedModel:
            pre = await self._client.get_model_config(names.MODEL_TILE_PREPROCESS, as_json=True)
            path = await self._client.get_model_config(names.MODEL_PATHWAY_QUERY, as_json=True)
            embed = await self._client.get_model_config(names.MODEL_PATCH_EMBED, as_json=True)
            return served_model_from_config(pre, path, embed)

        return await with_retries(
            fetch, attempts=self._attempts, base_s=self._base, what="model config"
        )

    async def patch_embed(self, tiles: NDArray[Any]) -> NDArray[Any]:
        """uint8 [n, H, W, 3] -> float32 [n, D]."""
        from tritonclient.grpc import InferInput

        inp = InferInput(names.TENSOR_TILES, list(tiles.shape), "UINT8")
        inp.set_data_from_numpy(np.ascontiguousarray(tiles))
        return await self._patch_embed(inp)

    async def register_region(self, name: str, key: str, size: int) -> None:
        """Register a system shared-memory region (histoprompt.wsi.shared_tiles)."""

        async def call() -> None:
            await self._client.register_system_shared_memory(name, key, size)

        await with_retries(
            call, attempts=self._attempts, base_s=self._base, what="shared-memory register"
        )

    async def unregister_region(self, name: str) -> None:
        """Best effort: a Triton that went away has forgotten the region anyway."""
        # Clean-up must not mask the slide's own outcome.
        with contextlib.suppress(Exception):
            await self._client.unregister_system_shared_memory(name)

    async def patch_embed_region(self, name: str, shape: tuple[int, ...]) -> NDArray[Any]:
        """patch_embed on uint8 tiles [n, H, W, 3] already written into region `name`."""
        from tritonclient.grpc import InferInput

        inp = InferInput(names.TENSOR_TILES, list(shape), "UINT8")
        inp.set_shared_memory(name, int(np.prod(shape)))
        return await self._patch_embed(inp)

    async def _patch_embed(self, inp: Any) -> NDArray[Any]:
        """One patch_embed request on a prepared tiles input, with retries."""
        from tritonclient.grpc import InferRequestedOutput

        out = [InferRequestedOutput(names.TENSOR_TILE_EMBEDDING)]

        async def call() -> NDArray[Any]:
            res = await self._client.infer(
                names.MODEL_PATCH_EMBED, [inp], outputs=out, client_timeout=self._timeout
            )
            return np.asarray(res.as_numpy(names.TENSOR_TILE_EMBEDDING), dtype=np.float32)

        return await with_retries(
            call, attempts=self._attempts, base_s=self._base, what=names.MODEL_PATCH_EMBED
        )

    async def readable_outputs(self) -> tuple[str, ...]:
        """names.READABLE_OUTPUTS the served slide_to_pathways has (none in an older repository),
        read once from its config."""
        if self._readable is None:

            async def fetch() -> dict[str, Any]:
                cfg: dict[str, Any] = await self._client.get_model_config(
                    names.MODEL_SLIDE_TO_PATHWAYS, as_json=True
                )
                return cfg

            cfg = await with_retries(
                fetch, attempts=self._attempts, base_s=self._base, what="model config"
            )
            self._readable = served_outputs(cfg, names.READABLE_OUTPUTS)
        return self._readable

    async def slide_to_pathways(
        self, embeddings: NDArray[Any], gene_sets: Sequence[str]
    ) -> dict[str, NDArray[Any]]:
        """[N, D] tile embeddings of one slide -> slide embedding, attention, scores, coverage,
        and PERCENTILE / ZSCORE where the served ensemble has them."""
        from tritonclient.grpc import InferInput, InferRequestedOutput

        emb = InferInput(names.TENSOR_TILE_EMBEDDING, list(embeddings.shape), "FP32")
        emb.set_data_from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
        sets = InferInput(names.TENSOR_GENE_SETS, [len(gene_sets)], "BYTES")
        sets.set_data_from_numpy(np.array([s.encode() for s in gene_sets], dtype=np.object_))
        wanted = (
            names.TENSOR_SLIDE_EMBEDDING,
            names.TENSOR_ATTENTION,
            names.TENSOR_SCORES,
            names.TENSOR_COVERAGE,
            *await self.readable_outputs(),
        )
        outs = [InferRequestedOutput(n) for n in wanted]

        async def call() -> dict[str, NDArray[Any]]:
            res = await self._client.infer(
                names.MODEL_SLIDE_TO_PATHWAYS,
                [emb, sets],
                outputs=outs,
                client_timeout=self._timeout,
            )
            return {n: np.asarray(res.as_numpy(n)) for n in wanted}

        return await with_retries(
            call, attempts=self._attempts, base_s=self._base, what=names.MODEL_SLIDE_TO_PATHWAYS
        )
