"""histoprompt.wsi.triton.TritonClient spreads requests over every Triton address its URL
resolves to (round_robin), as ingest needs behind the chart's headless Triton Service.

Two local gRPC servers speak Triton's GRPCInferenceService (ModelReady only) on
127.0.0.1 and 127.0.0.2, the two addresses a headless Service's DNS name would return for
two replicas; the target lists both (`ipv4:` scheme, what the resolver hands the policy).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from histoprompt.wsi.triton import TritonClient, channel_args


class _Replica(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, name: str, seen: Counter[str]) -> None:
        self._name = name
        self._seen = seen

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._seen[self._name] += 1
        return service_pb2.ModelReadyResponse(ready=True)


async def _serve(host: str, port: int, seen: Counter[str]) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Replica(host, seen), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


async def _count(channel_options: list[tuple[str, Any]] | None) -> Counter[str]:
    import tritonclient.grpc.aio as grpcaio

    seen: Counter[str] = Counter()
    first, port = await _serve("127.0.0.1", 0, seen)
    second, _ = await _serve("127.0.0.2", port, seen)
    target = f"ipv4:127.0.0.1:{port},127.0.0.2:{port}"
    client = (
        TritonClient(target, timeout_s=5.0, attempts=1, base_s=0.0)._client
        if channel_options is None
        else grpcaio.InferenceServerClient(target, channel_args=channel_options)
    )
    try:
        # Wait for both subchannels: round_robin rotates only over connected ones.
        await client.is_model_ready("m")
        await asyncio.sleep(0.3)
        seen.clear()
        for _ in range(40):
            assert await client.is_model_ready("m")
    finally:
        await client.close()
        await first.stop(None)
        await second.stop(None)
    return seen


def test_ingest_client_uses_round_robin() -> None:
    assert ("grpc.lb_policy_name", "round_robin") in channel_args()


def test_requests_rotate_over_both_replicas() -> None:
    seen = asyncio.run(_count(None))
    assert set(seen) == {"127.0.0.1", "127.0.0.2"}, seen
    assert min(seen.values()) >= 15, seen


def test_default_pick_first_pins_one_replica() -> None:
    """Control: gRPC's default policy sends everything to one address (the defect)."""
    without = [a for a in channel_args() if a[0] != "grpc.lb_policy_name"]
    seen = asyncio.run(_count(without))
    assert len(seen) == 1 and sum(seen.values()) == 40, seen


@pytest.mark.parametrize("url", ["dns:///triton-headless:8001", "triton:8001"])
def test_client_accepts_dns_targets(url: str) -> None:
    """The chart's dns:/// URL and a plain host:port both build a channel (no I/O yet)."""

    async def build() -> None:
        client = TritonClient(url, timeout_s=1.0, attempts=1, base_s=0.0)
        await client.close()

    asyncio.run(build())
