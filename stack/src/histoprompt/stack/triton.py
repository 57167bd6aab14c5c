"""Triton Inference Server: the `tritonserver` binary shipped in the nvidia-pytriton wheel.

The python backend needs its 3.11 stub next to `libtriton_python.so`; the wheel keeps the
stubs apart, so a backend directory of symlinks is assembled under the state dir.

How python-backend models see the project venv: the stub embeds CPython 3.11 in
*isolated* mode, so PYTHONPATH is ignored. Its interpreter finds its prefix from the
`python3` it meets first on PATH. The stack puts the venv's bin directory first on
Triton's PATH, so the embedded interpreter finds the venv's `pyvenv.cfg` and gets exactly
the venv's import path: its site-packages plus the editable `*/src` dirs of the
workspace (`.pth` files). A model.py can therefore `import histoprompt.core` or
`onnxruntime`. libpython3.11.so comes from the interpreter's LIBDIR, added to
LD_LIBRARY_PATH.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from pathlib import Path

import httpx

from histoprompt.core.settings import ConnectionSettings
from histoprompt.stack.errors import StackError
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import StackSettings
from histoprompt.stack.supervisor import ProcessSpec, service_log
from histoprompt.stack.tls import TlsFiles

NAME = "triton"
PY_STUB_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def pytriton_root() -> Path:
    """The `pytriton/tritonserver` directory of the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "nvidia-pytriton is not installed; install it with: make install-python", service=NAME
        )
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def tritonserver_binary(settings: StackSettings) -> Path:
    """The configured tritonserver, else the wheel's."""
    return settings.stack_tritonserver or pytriton_root() / "bin" / "tritonserver"


def build_backend_dir(target: Path, root: Path) -> Path:
    """`<target>/python/` holding the python backend and the matching stub, as symlinks."""
    python = target / "python"
    python.mkdir(parents=True, exist_ok=True)
    backend = root / "backends" / "python"
    stub = root / "python_backend_stubs" / PY_STUB_VERSION / "triton_python_backend_stub"
    sources = [
        backend / "libtriton_python.so",
        backend / "triton_python_backend_utils.py",
        stub,
    ]
    for source in sources:
        if not source.is_file():
            raise StackError(f"the pytriton wheel lacks {source}", service=NAME)
        link = python / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return target


def venv_path_env() -> str:
    """PATH with this interpreter's bin dir first: the stub's CPython takes the venv from it."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def library_path(root: Path) -> str:
    """LD_LIBRARY_PATH: libpython's directory and the wheel's bundled libraries first."""
    dirs = [
        str(sysconfig.get_config_var("LIBDIR") or ""),
        str(root.parent.parent / "nvidia_pytriton.libs"),
        os.environ.get("LD_LIBRARY_PATH", ""),
    ]
    return os.pathsep.join(d for d in dirs if d)


def check_installed(settings: StackSettings) -> Path:
    """The tritonserver binary, or a StackError saying how to install it."""
    binary = tritonserver_binary(settings)
    if not binary.is_file():
        raise StackError(
            f"tritonserver is missing at {binary}; install it with: make install-python "
            "(PyPI nvidia-pytriton)",
            service=NAME,
        )
    return binary


def prepare(
    settings: StackSettings,
    state_dir: Path,
    ports: StackPorts,
    model_repository: Path,
    connection_env: dict[str, str] | None = None,
) -> ProcessSpec:
    """Assemble the backend dir and return how to start Triton on loopback ports.

    `connection_env` (the HISTOPROMPT_* values of stack.env) goes into Triton's
    environment, so a python-backend model's `ConnectionSettings()` finds the stack's S3
    and Kafka the same way a pod does from the Helm chart's env vars.
    """
    binary = check_installed(settings)
    root = binary.parent.parent
    home = state_dir / NAME
    backends = build_backend_dir(home / "backends", root)
    model_repository.mkdir(parents=True, exist_ok=True)
    argv = [
        str(binary),
        f"--model-repository={model_repository}",
        "--model-control-mode=explicit",
        f"--backend-directory={backends}",
        f"--cache-directory={root / 'caches'}",
        "--http-address=127.0.0.1",
        f"--http-port={ports.triton_http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={ports.triton_grpc}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--allow-cpu-metrics=true",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={ports.triton_metrics}",
        "--strict-readiness=false",
        "--exit-timeout-secs=5",
        "--log-verbose=0",
    ]
    if settings.stack_tls:
        files = TlsFiles.at(state_dir)
        argv += [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={files.server_cert}",
            f"--grpc-server-key={files.server_key}",
            f"--grpc-root-cert={files.ca_cert}",
        ]
    env = {
        **(connection_env or {}),
        "PATH": venv_path_env(),
        "LD_LIBRARY_PATH": library_path(root),
        "PYTHONNOUSERSITE": "1",
        # One BLAS thread per model instance: the box is small and shared.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    return ProcessSpec(
        name=NAME,
        argv=argv,
        log_path=service_log(state_dir, NAME),
        env=env,
        cwd=home,
        stop_timeout=15.0,
    )


def probe(conn: ConnectionSettings) -> None:
    """Raise unless Triton's HTTP /v2/health/ready answers 200."""
    response = httpx.get(f"http://{conn.triton_http_url}/v2/health/ready", timeout=2.0)
    response.raise_for_status()
