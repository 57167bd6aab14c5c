"""MinIO (`minio server`, built by deploy/install/minio.sh) as the local S3 endpoint, with
real bucket notifications.

MinIO's own Kafka notification target is configured through its environment
(`MINIO_NOTIFY_KAFKA_*_HISTOPROMPT`), and the slides bucket sends every
`s3:ObjectCreated:*` event to `histoprompt.slides.incoming` through it, as a production
bucket does. So `histoprompt submit` publishes nothing itself on this stack
(`HISTOPROMPT_PUBLISH_EVENTS=false` in stack.env). Events MinIO cannot deliver yet (Kafka
still starting) wait in a queue directory and are sent when the broker is reachable.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from histoprompt.core import names
from histoprompt.core.settings import ConnectionSettings
from histoprompt.stack import s3_buckets
from histoprompt.stack.errors import StackError
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import StackSettings
from histoprompt.stack.supervisor import ProcessSpec, service_dirs, service_log
from histoprompt.stack.tls import TlsFiles

NAME = "minio"
# The pinned server (deploy/install/minio.sh and the Makefile's MINIO_VERSION).
MODULE = "github.com/minio/minio"
# The notification target's id (the env suffix); MinIO prints the ARN at start-up
# ("SQS ARNs: arn:minio:sqs::HISTOPROMPT:kafka") and registers it before Kafka is up.
TARGET_ID = "HISTOPROMPT"
TARGET_ARN = f"arn:minio:sqs::{TARGET_ID}:kafka"
CREATED_EVENTS = ("s3:ObjectCreated:*",)
NOTIFICATION_ID = "histoprompt-incoming"
TARGET_WAIT_S = 30.0
"""How long set-up waits for MinIO to load its notification target after it is up."""


def check_installed(settings: StackSettings) -> Path:
    """The minio binary, or a StackError saying how to install it."""
    binary = settings.minio_binary()
    if not binary.is_file():
        raise StackError(
            f"the minio server is missing at {binary}; build it with: make install-minio "
            f"(go install {MODULE}@<pinned version>)",
            service=NAME,
        )
    return binary


def notify_env(
    kafka_bootstrap: str, queue_dir: Path, settings: StackSettings | None = None
) -> dict[str, str]:
    """MinIO's Kafka notification target: brokers, topic, and a queue for undelivered events;
    in TLS mode over SASL_SSL as the stack's SCRAM user (MinIO trusts the CAs in
    `<certs dir>/CAs`)."""
    suffix = f"_{TARGET_ID}"
    env = {
        f"MINIO_NOTIFY_KAFKA_ENABLE{suffix}": "on",
        f"MINIO_NOTIFY_KAFKA_BROKERS{suffix}": kafka_bootstrap,
        f"MINIO_NOTIFY_KAFKA_TOPIC{suffix}": names.TOPIC_INCOMING,
        f"MINIO_NOTIFY_KAFKA_QUEUE_DIR{suffix}": str(queue_dir),
    }
    if settings is not None and settings.stack_tls and settings.kafka_sasl_password:
        env |= {
            f"MINIO_NOTIFY_KAFKA_TLS{suffix}": "on",
            f"MINIO_NOTIFY_KAFKA_SASL{suffix}": "on",
            f"MINIO_NOTIFY_KAFKA_SASL_MECHANISM{suffix}": "sha512",
            f"MINIO_NOTIFY_KAFKA_SASL_USERNAME{suffix}": settings.kafka_sasl_username or "",
            f"MINIO_NOTIFY_KAFKA_SASL_PASSWORD{suffix}": (
                settings.kafka_sasl_password.get_secret_value()
            ),
        }
    return env


def install_certs(certs: Path, files: TlsFiles) -> None:
    """MinIO's TLS layout: public.crt / private.key serve https, CAs/ holds what it trusts."""
    (certs / "CAs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(files.server_cert, certs / "public.crt")
    shutil.copyfile(files.server_key, certs / "private.key")
    shutil.copyfile(files.ca_cert, certs / "CAs" / "ca.crt")


def prepare(
    settings: StackSettings, state_dir: Path, ports: StackPorts, *, notify: bool
) -> ProcessSpec:
    """How to start a single-drive MinIO on loopback; `notify`: with the Kafka target."""
    binary = check_installed(settings)
    home, data = service_dirs(state_dir, NAME)
    (home / "certs").mkdir(exist_ok=True)
    if settings.stack_tls:
        install_certs(home / "certs", TlsFiles.at(state_dir))
    env = {
        "MINIO_ROOT_USER": settings.s3_access_key.get_secret_value(),
        "MINIO_ROOT_PASSWORD": settings.s3_secret_key.get_secret_value(),
        "MINIO_SITE_REGION": settings.s3_region,
        # Nothing reaches out: no console UI, no update check, no call-home.
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
        "MINIO_CALLHOME_ENABLE": "off",
    }
    if notify:
        queue = home / "events"
        queue.mkdir(exist_ok=True)
        env |= notify_env(f"127.0.0.1:{ports.kafka}", queue, settings)
    argv = [
        str(binary),
        "server",
        "--quiet",
        "--address",
        f"127.0.0.1:{ports.s3}",
        "--console-address",
        f"127.0.0.1:{ports.s3_console}",
        # MinIO otherwise creates ~/.minio (and ~/.minio/certs): keep it in the state dir.
        "--config-dir",
        str(home / "config"),
        "--certs-dir",
        str(home / "certs"),
        str(data),
    ]
    return ProcessSpec(
        name=NAME,
        argv=argv,
        log_path=service_log(state_dir, NAME),
        env=env,
        cwd=home,
        stop_timeout=5.0,
    )


def create_buckets(conn: ConnectionSettings, *, notify: bool) -> None:
    """The three buckets; with `notify`, the slides bucket's ObjectCreated events go to Kafka."""
    from minio.notificationconfig import NotificationConfig, QueueConfig

    client = s3_buckets.create_buckets(conn)
    if notify:
        queue = QueueConfig(list(CREATED_EVENTS), config_id=NOTIFICATION_ID, queue=TARGET_ARN)
        config = NotificationConfig(queue_config_list=[queue])
        _until_target_known(lambda: client.set_bucket_notification(conn.slides_bucket, config))


def _until_target_known(call: Callable[[], None], timeout_s: float = TARGET_WAIT_S) -> None:
    """`call` (which names TARGET_ARN), retried while MinIO does not know the ARN yet.

    MinIO answers its health check before it has loaded its notification targets: a bench
    run's set-up got `InvalidArgument: A specified destination ARN does not exist` on a
    server that was up. Other errors, and that one past `timeout_s`, are raised."""
    from minio.error import S3Error

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            call()
            return
        except S3Error as err:
            unknown = err.code == "InvalidArgument" and "ARN" in (err.message or "")
            if not unknown or time.monotonic() >= deadline:
                raise
        time.sleep(0.2)
