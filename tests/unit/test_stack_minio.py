"""The S3 server choice (SeaweedFS or MinIO), MinIO's command line and notification target,
and what stack.env says about who publishes the S3 events."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from histoprompt.core import names
from histoprompt.stack import StackError, StackSettings, up
from histoprompt.stack.ingest_demo import bucket_is_silent
from histoprompt.stack.launcher import connection_env
from histoprompt.stack.minio_server import TARGET_ARN, notify_env, prepare
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import DEFAULT_MINIO

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ports() -> StackPorts:
    return StackPorts(**{name: 21000 + i for i, name in enumerate(StackPorts.model_fields)})


def test_s3_entry_resolves_to_the_chosen_server() -> None:
    # MinIO is the default: it starts in about 1 s, SeaweedFS in about 3.4 s.
    minio = StackSettings()
    assert minio.services() == ("minio", "triton", "prometheus", "kafka")
    assert minio.s3_publishes_events
    seaweed = StackSettings(stack_s3_server="seaweed")
    assert seaweed.services() == ("seaweed", "triton", "prometheus", "kafka")
    assert not seaweed.s3_publishes_events
    # Without Kafka there is nowhere to send notifications: the CLI keeps publishing.
    lone = StackSettings(stack_s3_server="minio", stack_services=("s3", "triton"))
    assert lone.services() == ("minio", "triton")
    assert not lone.s3_publishes_events


def test_server_named_in_services_wins_unless_the_setting_clashes() -> None:
    assert StackSettings(stack_services=("seaweed",)).services() == ("seaweed",)
    named = StackSettings(stack_services=("minio", "kafka"))
    assert named.services() == ("minio", "kafka")
    assert named.stack_s3_server == "minio"
    assert named.s3_publishes_events
    with pytest.raises(ValidationError, match="HISTOPROMPT_STACK_S3_SERVER is seaweed"):
        StackSettings(stack_services=("minio", "kafka"), stack_s3_server="seaweed")
    with pytest.raises(ValidationError, match="HISTOPROMPT_STACK_S3_SERVER is minio"):
        StackSettings(stack_services=("seaweed",), stack_s3_server="minio")
    with pytest.raises(ValidationError, match="both"):
        StackSettings(stack_services=("minio", "seaweed"))
    with pytest.raises(ValidationError):
        StackSettings(stack_s3_server="ceph")


def test_s3_server_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTOPROMPT_STACK_S3_SERVER", "seaweed")
    assert StackSettings().services()[0] == "seaweed"


@pytest.mark.parametrize(("server", "publish"), [("seaweed", "true"), ("minio", "false")])
def test_stack_env_says_who_publishes_events(
    ports: StackPorts, tmp_path: Path, server: str, publish: str
) -> None:
    env = connection_env(StackSettings(stack_s3_server=server), ports, tmp_path, tmp_path)
    assert env["HISTOPROMPT_PUBLISH_EVENTS"] == publish


def test_demo_publishes_only_when_the_bucket_is_silent(ports: StackPorts, tmp_path: Path) -> None:
    for server, silent in (("seaweed", True), ("minio", False)):
        env = connection_env(StackSettings(stack_s3_server=server), ports, tmp_path, tmp_path)
        env_file = tmp_path / f"{server}.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        assert bucket_is_silent(env_file) is silent
    assert bucket_is_silent(tmp_path / "missing.env")


def test_minio_listens_on_loopback_with_the_kafka_target(ports: StackPorts, tmp_path: Path) -> None:
    binary = tmp_path / "bin-minio"
    binary.write_text("")
    settings = StackSettings(stack_minio=binary, s3_access_key="ak1", s3_secret_key="sk123456")
    spec = prepare(settings, tmp_path, ports, notify=True)
    argv = list(spec.argv)
    assert argv[:2] == [str(binary), "server"]
    assert argv[argv.index("--address") + 1] == f"127.0.0.1:{ports.s3}"
    assert argv[argv.index("--console-address") + 1] == f"127.0.0.1:{ports.s3_console}"
    assert str(tmp_path) in argv[argv.index("--certs-dir") + 1]  # not ~/.minio
    assert str(tmp_path) in argv[argv.index("--config-dir") + 1]
    assert spec.env["MINIO_ROOT_USER"] == "ak1"
    assert spec.env["MINIO_ROOT_PASSWORD"] == "sk123456"
    assert spec.env["MINIO_BROWSER"] == "off"
    assert spec.env["MINIO_NOTIFY_KAFKA_BROKERS_HISTOPROMPT"] == f"127.0.0.1:{ports.kafka}"
    assert spec.env["MINIO_NOTIFY_KAFKA_TOPIC_HISTOPROMPT"] == names.TOPIC_INCOMING
    assert Path(spec.env["MINIO_NOTIFY_KAFKA_QUEUE_DIR_HISTOPROMPT"]).is_dir()
    quiet = prepare(settings, tmp_path, ports, notify=False)
    assert not any(k.startswith("MINIO_NOTIFY_") for k in quiet.env)


def test_target_arn_names_the_env_target() -> None:
    env = notify_env("127.0.0.1:1", Path("/q"))
    target_ids = {k.rsplit("_", 1)[1] for k in env}
    assert target_ids == {"HISTOPROMPT"}
    assert TARGET_ARN == "arn:minio:sqs::HISTOPROMPT:kafka"


def test_missing_minio_names_the_fix(tmp_path: Path) -> None:
    settings = StackSettings(
        stack_state_dir=tmp_path / "state",
        stack_s3_server="minio",
        stack_minio=tmp_path / "no-minio",
        stack_services=("s3",),
    )
    with pytest.raises(StackError, match="make install-minio") as info:
        up(settings)
    assert info.value.service == "minio"


def test_makefile_installs_minio_where_the_stack_looks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    prefix = re.search(r"^MINIO_PREFIX\s*\?=\s*(\S+)", makefile, flags=re.M)
    assert prefix is not None
    assert Path(prefix.group(1).replace("$(HOME)", str(Path.home()))) / "bin" / "minio" == (
        DEFAULT_MINIO
    )
    version = re.search(r"^MINIO_VERSION\s*\?=\s*(\S+)", makefile, flags=re.M)
    assert version is not None and re.fullmatch(r"v0\.0\.0-\d{14}-[0-9a-f]{12}", version.group(1))
    assert "install-minio" in re.search(r"^install:.*$", makefile, flags=re.M).group(0)  # type: ignore[union-attr]


def _s3_error(code: str, message: str) -> Exception:
    from minio.error import S3Error

    return S3Error(None, code, message, "/histoprompt-slides", "req", "host")  # type: ignore[arg-type]


def test_set_up_waits_for_minio_to_load_its_notification_target() -> None:
    """MinIO is up before its Kafka target is loaded: the ARN error is retried, others not."""
    from histoprompt.stack.minio_server import _until_target_known

    unknown = _s3_error("InvalidArgument", "A specified destination ARN does not exist")
    calls: list[int] = []

    def known_on_third_call() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise unknown

    _until_target_known(known_on_third_call, timeout_s=10)
    assert len(calls) == 3

    def denied() -> None:
        calls.append(1)
        raise _s3_error("AccessDenied", "Access Denied.")

    calls.clear()
    with pytest.raises(Exception, match="Access Denied"):
        _until_target_known(denied, timeout_s=10)
    assert len(calls) == 1

    def never_known() -> None:
        raise unknown

    with pytest.raises(Exception, match="ARN does not exist"):
        _until_target_known(never_known, timeout_s=0.5)
