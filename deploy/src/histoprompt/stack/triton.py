"""Triton Inference Server: the `tritonserver` binary shipped in the nvidia-pytriton wheel.

The python backend needs its 3.11 stub next to `libtriton_python.so`; the wheel keeps the
stubs apart, so a backend directory is assembled under the state dir from symlinks.

Python-backend models run in the stub, an embedded CPython 3.11 that does not know the
project venv. The stack passes the launcher's own `sys.path` as PYTHONPATH (the venv's
site-packages and the editable `*/src` dirs), so a model.py can `import histoprompt.core`
or `onnxruntime`; and it adds the interpreter's LIBDIR (libpython3.11.so) to
LD_LIBRARY_PATH, where the stub looks for it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx

from histoprompt.core.settings import ConnectionSettings
from histoprompt.stack.errors import StackError
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import StackSettings
from histoprompt.stack.supervisor import ProcessSpec

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
    stub = root / "python_backend_stubs" / PY_STUB_VERSION / "triton_python_backend_stub"
    sources = {
        "libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": root
        / "backends"
        / "python"
        / "triton_python_backend_utils.py",
        "triton_python_backend_stub": stub,
    }
    for name, source in sources.items():
        if not source.is_file():
            raise StackError(f"the pytriton wheel lacks {source}", service=NAME)
        link = python / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return target


def model_pythonpath() -> str:
    """PYTHONPATH for python-backend models: the venv's import path, editable sources included.

    Asked of an isolated interpreter (-I), so neither the caller's cwd nor its PYTHONPATH
    leak into the models.
    """
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv
            [sys.executable, "-I", "-c", "import sys; print('\\n'.join(sys.path))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise StackError(f"cannot read the venv's sys.path: {err}", service=NAME) from err
    stdlib = {sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")}
    entries = [p for p in out.splitlines() if p and p not in stdlib and Path(p).is_dir()]
    return os.pathsep.join(dict.fromkeys(entries))


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
    settings: StackSettings, state_dir: Path, ports: StackPorts, model_repository: Path
) -> ProcessSpec:
    """Assemble the backend dir and return how to start Triton on loopback ports."""
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
    env = {
        "PYTHONPATH": model_pythonpath(),
        "LD_LIBRARY_PATH": library_path(root),
        "PYTHONNOUSERSITE": "1",
        # One BLAS thread per model instance: the box is small and shared.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    return ProcessSpec(
        name=NAME,
        argv=argv,
        log_path=state_dir / "logs" / f"{NAME}.log",
        env=env,
        cwd=home,
        stop_timeout=15.0,
    )


def probe(conn: ConnectionSettings) -> None:
    """Raise unless Triton's HTTP /v2/health/ready answers 200."""
    response = httpx.get(f"http://{conn.triton_http_url}/v2/health/ready", timeout=2.0)
    response.raise_for_status()
