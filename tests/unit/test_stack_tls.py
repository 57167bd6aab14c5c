"""The stack's TLS mode pieces without a running stack: the test CA signs a server
certificate that Python's own TLS stack accepts for 127.0.0.1 and localhost and rejects under
another CA; Kafka's TLS listeners and SCRAM bootstrap arguments; stack.env's client settings."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from histoprompt.core.settings import ConnectionSettings
from histoprompt.stack import kafka
from histoprompt.stack.launcher import connection_env
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import StackSettings
from histoprompt.stack.tls import HOSTS, TlsFiles, make_ca, make_server_cert


def _files(tmp_path: Path) -> TlsFiles:
    files = TlsFiles.at(tmp_path)
    files.home.mkdir()
    make_ca(files.ca_cert, files.ca_key)
    make_server_cert(files)
    return files


def _handshake(files: TlsFiles, cafile: Path, host: str) -> None:
    """A real in-memory TLS handshake: server with the stack's cert, client with `cafile`."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.server_cert, files.server_key)
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    client.do_handshake()


@pytest.mark.parametrize("host", HOSTS)
def test_server_certificate_is_trusted_under_its_ca_only(tmp_path: Path, host: str) -> None:
    files = _files(tmp_path)
    _handshake(files, files.ca_cert, host)
    other = tmp_path / "other"
    make_ca(other / "ca.crt", other / "ca.key", "another CA")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, other / "ca.crt", host)


def _ports() -> StackPorts:
    return StackPorts(**{name: 20000 + i for i, name in enumerate(StackPorts.model_fields)})


def test_kafka_tls_listeners_and_scram(tmp_path: Path) -> None:
    files = TlsFiles.at(tmp_path)
    files.home.mkdir()
    files.keystore_password_file.write_text("store-pass")
    ports = _ports()
    props = dict(
        line.split("=", 1)
        for line in kafka.server_properties(ports, tmp_path / "data", files).splitlines()
    )
    assert props["listeners"].startswith(f"SASL_SSL://127.0.0.1:{ports.kafka},SSL://")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["ssl.keystore.location"] == str(files.keystore)
    assert "SASL_SSL" not in kafka.server_properties(ports, tmp_path / "data")

    settings = StackSettings(
        stack_tls=True, kafka_sasl_password=SecretStr("pw-1"), kafka_sasl_username="u"
    ).with_tls_credentials()
    assert kafka._scram_args(settings) == (
        "--add-scram",
        'SCRAM-SHA-512=[name=u,password="pw-1"]',
    )
    assert kafka._scram_args(StackSettings()) == ()


def test_tls_mode_writes_client_settings_that_trust_the_test_ca(tmp_path: Path) -> None:
    settings = StackSettings(stack_tls=True).with_tls_credentials()
    password = settings.kafka_sasl_password
    assert password is not None and len(password.get_secret_value()) >= 20  # random
    env = connection_env(settings, _ports(), tmp_path, tmp_path / "repo")
    conn = ConnectionSettings.model_validate(
        {k.removeprefix("HISTOPROMPT_").lower(): v for k, v in env.items()}, strict=False
    )
    ca = str(TlsFiles.at(tmp_path).ca_cert)
    assert conn.kafka_security_protocol == "SASL_SSL"
    assert conn.kafka_ssl_cafile == ca and conn.s3_ca_file == ca
    assert conn.s3_secure and conn.triton_ssl
    assert conn.triton_grpc_options() == {"ssl": True, "root_certificates": ca}
    # The password is in stack.env (the clients' only source) but never in a repr.
    assert password.get_secret_value() not in repr(conn)
    plain = connection_env(StackSettings(), _ports(), tmp_path, tmp_path / "repo")
    assert plain["HISTOPROMPT_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
