"""Client-side round-robin over two real Triton servers.

Two `tritonserver` processes (the nvidia-pytriton wheel's binary, as the local stack runs it)
serve the stack's test model stack_add_one on their own loopback ports. The ingest's
channel options (histoprompt.wsi.triton.channel_args, round_robin) on a target that lists
both addresses (what a headless Service's DNS name resolves to) must spread the requests
over both servers, counted by each server's own nv_inference_request_success; gRPC's default
pick_first sends them all to one.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from histoprompt.stack.triton import build_backend_dir, library_path, pytriton_root, venv_path_env
from histoprompt.wsi.triton import channel_args

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = "stack_add_one"
REQUESTS = 24


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(home: Path) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    root = pytriton_root()
    repo = home / "models"
    shutil.copytree(
        ROOT / "tests" / "integration" / "assets" / "stack_models" / MODEL, repo / MODEL
    )
    (repo / MODEL / "1").mkdir(exist_ok=True)
    ports = {"http": _free_port(), "grpc": _free_port(), "metrics": _free_port()}
    argv = [
        str(root / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        "--model-control-mode=explicit",
        f"--load-model={MODEL}",
        f"--backend-directory={build_backend_dir(home / 'backends', root)}",
        "--http-address=127.0.0.1",
        f"--http-port={ports['http']}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={ports['grpc']}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={ports['metrics']}",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=5",
    ]
    env = {
        **os.environ,
        "PATH": venv_path_env(),
        "LD_LIBRARY_PATH": library_path(root),
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": "1",
    }
    log = (home / "triton.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    return proc, ports


def _wait_ready(proc: subprocess.Popen[bytes], ports: dict[str, int], log: Path) -> None:
    deadline = time.monotonic() + 120
    url = f"http://127.0.0.1:{ports['http']}/v2/models/{MODEL}/ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tritonserver exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"tritonserver not ready in 120 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def two_tritons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, int]]]:
    started = []
    try:
        for i in range(2):
            home = tmp_path_factory.mktemp(f"triton{i}")
            proc, ports = _start(home)
            started.append((proc, ports, home / "triton.log"))
        for proc, ports, log in started:
            _wait_ready(proc, ports, log)
        yield [ports for _, ports, _ in started]
    finally:
        for proc, _, _ in started:
            proc.terminate()
        for proc, _, _ in started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _successes(ports: dict[str, int]) -> int:
    text = httpx.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5.0).text
    pattern = rf'^nv_inference_request_success{{[^}}]*model="{MODEL}"[^}}]*}} (\S+)$'
    match = re.search(pattern, text, re.M)
    return int(float(match.group(1))) if match else 0


async def _infer(target: str, options: list[tuple[str, Any]]) -> None:
    import tritonclient.grpc.aio as grpcaio
    from tritonclient.grpc import InferInput

    client = grpcaio.InferenceServerClient(target, channel_args=options)
    try:
        # Let round_robin connect to both addresses before counting.
        assert await client.is_model_ready(MODEL)
        await asyncio.sleep(0.5)
        for _ in range(REQUESTS):
            inp = InferInput("INPUT", [1, 4], "FP32")
            inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            result = await client.infer(MODEL, [inp])
            assert np.allclose(result.as_numpy("OUTPUT"), 2.0)
    finally:
        await client.close()


def _served(servers: list[dict[str, int]], options: list[tuple[str, Any]]) -> list[int]:
    before = [_successes(s) for s in servers]
    target = "ipv4:" + ",".join(f"127.0.0.1:{s['grpc']}" for s in servers)
    asyncio.run(_infer(target, options))
    return [_successes(s) - b for s, b in zip(servers, before, strict=True)]


def test_round_robin_spreads_requests_over_both_tritons(two_tritons: list[dict[str, int]]) -> None:
    served = _served(two_tritons, channel_args())
    assert sum(served) == REQUESTS, served
    assert min(served) >= REQUESTS // 4, f"requests per server: {served}"


def test_pick_first_pins_one_triton(two_tritons: list[dict[str, int]]) -> None:
    """Control: without round_robin (what ingest did through a ClusterIP) one server gets all."""
    pick_first = [a for a in channel_args() if a[0] != "grpc.lb_policy_name"]
    served = _served(two_tritons, pick_first)
    assert sorted(served) == [0, REQUESTS], served
