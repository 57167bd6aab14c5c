"""core.preflight without a stack: the SCRAM proof against RFC 7677's published exchange, and
which failures count as a refused certificate. (The checks against real services run in
tests/integration/test_tls_stack.py.)"""

from __future__ import annotations

import base64
import ssl

import pytest

from histoprompt.core.errors import PermissionDeniedError, ServiceUnavailableError
from histoprompt.core.preflight import _scram_proof, check_tls, tls_refused


def test_scram_sha256_proof_matches_rfc7677() -> None:
    # RFC 7677 section 3: user "user", password "pencil".
    client_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final_bare = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    proof, server_signature = _scram_proof(
        "SCRAM-SHA-256", "pencil", client_bare, server_first, final_bare
    )
    assert proof == "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    assert base64.b64encode(server_signature).decode() == (
        "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    )
    wrong, _ = _scram_proof("SCRAM-SHA-256", "pencil2", client_bare, server_first, final_bare)
    assert wrong != proof


def test_tls_refused_follows_the_cause_chain() -> None:
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify")
    try:
        try:
            raise verify
        except ssl.SSLError as inner:
            raise OSError("MaxRetryError: wrapped") from inner
    except OSError as outer:
        assert tls_refused(outer)
    grpc_text = RuntimeError(
        "[StatusCode.UNAVAILABLE] failed to connect to all addresses; last error: UNKNOWN: "
        "ipv4:127.0.0.1:1: Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL"
    )
    assert tls_refused(grpc_text)
    assert not tls_refused(ConnectionRefusedError(111, "Connection refused"))
    assert not tls_refused(TimeoutError("timed out"))


def test_check_tls_on_a_closed_port_is_unavailable_not_refused() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ServiceUnavailableError) as err:
            check_tls(f"127.0.0.1:{port}", None, "Kafka", "HISTOPROMPT_KAFKA_SSL_CAFILE")
    assert not isinstance(err.value, PermissionDeniedError)


def test_s3_login_check_on_a_dead_endpoint_is_unavailable_not_a_crash(
    clean_histoprompt_env: None,
) -> None:
    import socket

    from histoprompt.core.preflight import check_all
    from histoprompt.core.settings import ConnectionSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        settings = ConnectionSettings(s3_endpoint=f"127.0.0.1:{port}")
        with pytest.raises(ServiceUnavailableError) as err:
            check_all(settings, ("kafka", "s3", "triton"))  # kafka, triton: plaintext, no check
    assert not isinstance(err.value, PermissionDeniedError)
