"""Before a process starts work: is each service's certificate trusted, and are our Kafka
credentials accepted? A refusal is a PermissionDeniedError (exit code 4 in the CLI and in
`histoprompt-ingest run`), an unreachable service a ServiceUnavailableError.

Why our own checks: kafka-python reports a rejected certificate and a rejected SCRAM password
alike, as "Unable to bootstrap" after its timeout, and gRPC as UNAVAILABLE. A TLS handshake
with the configured CA file (stdlib `ssl`) and one SCRAM exchange (the Kafka wire protocol's
SaslHandshake v1 / SaslAuthenticate v0, stdlib only) tell the cases apart. Messages name the
setting to fix and never carry a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import ssl
import struct
from collections.abc import Iterable

from histoprompt.core.errors import PermissionDeniedError, ServiceUnavailableError
from histoprompt.core.settings import ConnectionSettings

TIMEOUT_S = 5.0
_SASL_HANDSHAKE = (17, 1)  # api key, version
_SASL_AUTHENTICATE = (36, 0)
_SCRAM_HASHES = {"SCRAM-SHA-512": hashlib.sha512, "SCRAM-SHA-256": hashlib.sha256}
# Markers of a certificate the client refused, in the texts of ssl, urllib3 and gRPC errors.
TLS_REFUSED = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "handshake failed")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.split(",")[0].strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def tls_context(cafile: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def tls_connect(address: str, cafile: str | None, what: str, setting: str) -> ssl.SSLSocket:
    """A verified TLS connection to `address`; a refused certificate is a
    PermissionDeniedError naming `setting` (the CA file to fix)."""
    host, port = _split(address)
    try:
        raw = socket.create_connection((host, port), timeout=TIMEOUT_S)
    except OSError as err:
        raise ServiceUnavailableError(f"{what} unreachable at {host}:{port}: {err}") from err
    try:
        return tls_context(cafile).wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as err:
        raw.close()
        raise PermissionDeniedError(
            f"{what} at {host}:{port}: its TLS certificate is not trusted "
            f"({err.verify_message}); check {setting}"
        ) from err
    except (ssl.SSLError, OSError) as err:
        raw.close()
        raise ServiceUnavailableError(f"{what} at {host}:{port}: TLS failed: {err}") from err


def check_tls(address: str, cafile: str | None, what: str, setting: str) -> None:
    tls_connect(address, cafile, what, setting).close()


# -- Kafka SCRAM ---------------------------------------------------------------------------


def _request(sock: socket.socket, api: tuple[int, int], corr: int, body: bytes) -> bytes:
    client = b"histoprompt-preflight"
    header = struct.pack(">hhih", api[0], api[1], corr, len(client)) + client
    frame = header + body
    sock.sendall(struct.pack(">i", len(frame)) + frame)
    size = struct.unpack(">i", _read(sock, 4))[0]
    payload = _read(sock, size)
    return payload[4:]  # past the correlation id


def _read(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        out += chunk
    return out


def _authenticate(sock: socket.socket, corr: int, token: bytes) -> tuple[int, str, bytes]:
    data = _request(sock, _SASL_AUTHENTICATE, corr, struct.pack(">i", len(token)) + token)
    code, msg_len = struct.unpack(">hh", data[:4])
    msg = data[4 : 4 + max(msg_len, 0)].decode(errors="replace")
    rest = data[4 + max(msg_len, 0) :]
    (n,) = struct.unpack(">i", rest[:4])
    return code, msg, rest[4 : 4 + max(n, 0)]


def _scram_proof(
    hash_name: str, password: str, client_bare: str, server_first: str, final_bare: str
) -> tuple[str, bytes]:
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    salt, iterations = base64.b64decode(fields["s"]), int(fields["i"])
    algo = _SCRAM_HASHES[hash_name]
    salted = hashlib.pbkdf2_hmac(algo().name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", algo).digest()
    auth_message = f"{client_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(algo(client_key).digest(), auth_message, algo).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", algo).digest()
    return base64.b64encode(proof).decode(), hmac.new(server_key, auth_message, algo).digest()


def scram_login(sock: socket.socket, mechanism: str, user: str, password: str) -> None:
    """One SCRAM exchange on an open broker connection; PermissionDeniedError if refused."""
    mech = mechanism.encode()
    data = _request(sock, _SASL_HANDSHAKE, 1, struct.pack(">h", len(mech)) + mech)
    (code,) = struct.unpack(">h", data[:2])
    if code != 0:
        raise PermissionDeniedError(
            f"Kafka does not offer SASL {mechanism}; check HISTOPROMPT_KAFKA_SASL_MECHANISM"
        )
    name = user.replace("=", "=3D").replace(",", "=2C")
    client_bare = f"n={name},r={secrets.token_urlsafe(18)}"
    code, _, server_first = _authenticate(sock, 2, f"n,,{client_bare}".encode())
    refused = PermissionDeniedError(
        f"Kafka refused the SASL {mechanism} login of user {user!r}; check "
        "HISTOPROMPT_KAFKA_SASL_USERNAME / HISTOPROMPT_KAFKA_SASL_PASSWORD"
    )
    if code != 0:
        raise refused
    first = server_first.decode()
    nonce = dict(item.split("=", 1) for item in first.split(","))["r"]
    final_bare = f"c=biws,r={nonce}"
    proof, _ = _scram_proof(mechanism, password, client_bare, first, final_bare)
    try:
        code, _, _ = _authenticate(sock, 3, f"{final_bare},p={proof}".encode())
    except ConnectionError as err:  # some brokers close at once after a failed proof
        raise refused from err
    if code != 0:
        raise refused


def check_kafka(settings: ConnectionSettings) -> None:
    """The first bootstrap broker's certificate (SSL, SASL_SSL) and SCRAM login (SASL_SSL)."""
    protocol = settings.kafka_security_protocol.upper()
    if protocol not in ("SSL", "SASL_SSL"):
        return
    sock = tls_connect(
        settings.kafka_bootstrap, settings.kafka_ssl_cafile, "Kafka", "HISTOPROMPT_KAFKA_SSL_CAFILE"
    )
    with sock:
        mechanism = (settings.kafka_sasl_mechanism or "").upper()
        if protocol != "SASL_SSL" or mechanism not in _SCRAM_HASHES:
            return
        password = settings.kafka_sasl_password
        try:
            scram_login(
                sock,
                mechanism,
                settings.kafka_sasl_username or "",
                password.get_secret_value() if password is not None else "",
            )
        except (OSError, ValueError, KeyError, struct.error) as err:
            raise ServiceUnavailableError(f"Kafka SASL exchange failed: {err}") from err


def check_s3_tls(settings: ConnectionSettings) -> None:
    if settings.s3_secure:
        check_tls(settings.s3_endpoint, settings.s3_ca_file, "S3", "HISTOPROMPT_S3_CA_FILE")


def check_triton_tls(settings: ConnectionSettings) -> None:
    if settings.triton_ssl:
        check_tls(
            settings.triton_url,
            settings.triton_ssl_root_cert,
            "Triton gRPC",
            "HISTOPROMPT_TRITON_SSL_ROOT_CERT",
        )


def check_all(settings: ConnectionSettings, services: Iterable[str]) -> None:
    """The checks of `services` (kafka: certificate and SCRAM login; s3: certificate and
    keys, on the results bucket; triton: certificate), in that order."""
    checks = {
        "kafka": check_kafka,
        "s3": lambda s: check_s3_login(s, s.results_bucket),
        "triton": check_triton_tls,
    }
    for name in services:
        checks[name](settings)


def tls_refused(exc: BaseException) -> bool:
    """True when `exc`, or an exception it came from, is a certificate we refused."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return True
        if any(marker.lower() in str(cur).lower() for marker in TLS_REFUSED):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def check_s3_login(settings: ConnectionSettings, bucket: str) -> None:
    """One authenticated request (does `bucket` exist?): refused keys are a
    PermissionDeniedError, a refused certificate too."""
    from minio.error import S3Error
    from urllib3.exceptions import HTTPError

    from histoprompt.core.s3 import AUTH_ERROR_CODES, make_minio

    check_s3_tls(settings)
    client = make_minio(settings, connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S, retries=0)
    try:
        client.bucket_exists(bucket)
    except HTTPError as err:  # unreachable (a refused certificate was found just above)
        raise ServiceUnavailableError(f"S3 unreachable at {settings.s3_endpoint}") from err
    except S3Error as err:
        if err.code in AUTH_ERROR_CODES:
            raise PermissionDeniedError(
                f"S3 at {settings.s3_endpoint} refused the credentials ({err.code}); check "
                "HISTOPROMPT_S3_ACCESS_KEY / HISTOPROMPT_S3_SECRET_KEY"
            ) from err
        raise ServiceUnavailableError(f"S3 at {settings.s3_endpoint}: {err.code}") from err
