"""Generated service configs, stack.env, and start-up failures before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from histoprompt.core.settings import ConnectionSettings
from histoprompt.stack import StackError, StackSettings, down, status, up
from histoprompt.stack.handle import StackHandle
from histoprompt.stack.kafka import cluster_id, server_properties
from histoprompt.stack.launcher import connection_env
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.prometheus import JOB_INGEST, JOB_TRITON, config, rule_files
from histoprompt.stack.state import StackState, read_state
from histoprompt.stack.triton import build_backend_dir, pytriton_root


@pytest.fixture
def ports() -> StackPorts:
    return StackPorts(**{name: 20000 + i for i, name in enumerate(StackPorts.model_fields)})


def test_kafka_listens_on_loopback_only(ports: StackPorts, tmp_path: Path) -> None:
    props = dict(line.split("=", 1) for line in server_properties(ports, tmp_path).splitlines())
    assert props["listeners"] == (
        f"PLAINTEXT://127.0.0.1:{ports.kafka},CONTROLLER://127.0.0.1:{ports.kafka_controller}"
    )
    assert props["controller.quorum.voters"] == f"1@127.0.0.1:{ports.kafka_controller}"
    assert props["process.roles"] == "broker,controller"
    assert len({cluster_id() for _ in range(20)}) == 20
    assert all(len(cluster_id()) == 22 for _ in range(20))


def test_prometheus_config_and_rules(ports: StackPorts, tmp_path: Path) -> None:
    (tmp_path / "histoprompt.yml").write_text("groups:\n- name: g\n  rules: []\n")
    (tmp_path / "crd.yaml").write_text("apiVersion: monitoring.coreos.com/v1\nkind: X\n")
    (tmp_path / "broken.yml").write_text("groups: [\n")
    rules = rule_files(tmp_path)
    assert rules == [(tmp_path / "histoprompt.yml").resolve()]
    assert rule_files(tmp_path / "missing") == []
    cfg = yaml.safe_load(yaml.safe_dump(config(ports, "2s", rules)))
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in cfg["scrape_configs"]}
    assert jobs[JOB_TRITON] == [f"127.0.0.1:{ports.triton_metrics}"]
    assert jobs[JOB_INGEST] == [f"127.0.0.1:{ports.ingest_metrics}"]
    assert cfg["global"]["scrape_interval"] == "2s"


def test_env_round_trips_into_connection_settings(ports: StackPorts, tmp_path: Path) -> None:
    settings = StackSettings(s3_access_key="ak", s3_secret_key="sk")
    env = connection_env(settings, ports, tmp_path, tmp_path / "repo")
    handle = StackHandle(
        StackState(
            state_dir=tmp_path,
            env_file=tmp_path / "stack.env",
            model_repository=tmp_path / "repo",
            ports=ports,
            env=env,
            started_at="2026-01-01T00:00:00Z",
        )
    )
    s = handle.settings
    assert s.kafka_bootstrap == f"127.0.0.1:{ports.kafka}"
    assert s.s3_endpoint == f"127.0.0.1:{ports.s3}"
    assert s.s3_access_key.get_secret_value() == "ak"
    assert s.triton_url == f"127.0.0.1:{ports.triton_grpc}"
    assert s.triton_http_url == f"127.0.0.1:{ports.triton_http}"
    assert handle.triton_metrics_url == f"http://127.0.0.1:{ports.triton_metrics}/metrics"
    assert handle.prometheus_url == f"http://127.0.0.1:{ports.prometheus}"
    assert env["HISTOPROMPT_INGEST_METRICS_PORT"] == str(ports.ingest_metrics)
    # A file with these lines is what the other parts read through HISTOPROMPT_ENV_FILE.
    env_file = tmp_path / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    assert ConnectionSettings.load(env_file).triton_url == s.triton_url


def test_backend_dir_has_the_python_stub(tmp_path: Path) -> None:
    backends = build_backend_dir(tmp_path / "backends", pytriton_root())
    names = {p.name for p in (backends / "python").iterdir()}
    assert names == {
        "libtriton_python.so",
        "triton_python_backend_utils.py",
        "triton_python_backend_stub",
    }
    assert (backends / "python" / "triton_python_backend_stub").resolve().parent.name == "3.11"


def test_missing_install_fails_before_anything_starts(tmp_path: Path) -> None:
    settings = StackSettings(
        stack_state_dir=tmp_path / "state",
        stack_env_file=tmp_path / "stack.env",
        stack_kafka_libs=tmp_path / "no-jars",
        stack_s3_server="seaweed",  # weed comes with the Python install; MinIO may be unbuilt
    )
    with pytest.raises(StackError, match="make install-kafka") as info:
        up(settings)
    assert info.value.service == "kafka"
    assert read_state(tmp_path / "state") is None
    assert not (tmp_path / "stack.env").exists()
    assert status(tmp_path / "state").services == []
    assert down(tmp_path / "state") == []


def test_missing_prometheus_names_the_fix(tmp_path: Path) -> None:
    settings = StackSettings(
        stack_state_dir=tmp_path / "state",
        stack_prometheus="no-such-prometheus",
        stack_services=("prometheus",),
    )
    with pytest.raises(StackError, match="apt-get install -y prometheus"):
        up(settings)


def test_kafka_class_archive_is_keyed_by_the_jars(tmp_path: Path) -> None:
    from histoprompt.stack.kafka import class_archive, keep_class_archive

    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "kafka_2.13-4.1.1.jar").write_bytes(b"x" * 10)
    settings = StackSettings(stack_kafka_libs=libs)
    first = class_archive(settings)
    assert first.parent == tmp_path
    assert class_archive(settings) == first
    (libs / "extra.jar").write_bytes(b"y")
    second = class_archive(settings)
    assert second != first

    dumped = tmp_path / "classes.jsa"
    dumped.write_bytes(b"archive-1")
    keep_class_archive(dumped, second)
    assert second.read_bytes() == b"archive-1"
    dumped.write_bytes(b"archive-2")
    keep_class_archive(dumped, second)  # an archive in the cache is never replaced
    assert second.read_bytes() == b"archive-1"
