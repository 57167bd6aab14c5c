"""The TLS mode's certificates: a throw-away CA, and server certificates for 127.0.0.1 and
localhost signed by it (MinIO's S3, Triton's gRPC), plus Kafka's PKCS12 keystore made by
`keytool` with its certificate signed by the same CA.

Made fresh by each `up()` with HISTOPROMPT_STACK_TLS=true, under `<state dir>/tls/`; the CA's
certificate (`ca.crt`) is what clients trust (HISTOPROMPT_S3_CA_FILE,
HISTOPROMPT_KAFKA_SSL_CAFILE, HISTOPROMPT_TRITON_SSL_ROOT_CERT). Test-only: the keys are not
protected beyond the state dir's permissions.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from histoprompt.stack.errors import StackError

# The names every loopback service is reached by.
HOSTS = ("127.0.0.1", "localhost")
_VALID_DAYS = 7
_KEYTOOL_TIMEOUT_S = 60.0
_KEYSTORE_ALIAS = "broker"


@dataclass(frozen=True)
class TlsFiles:
    """Where `make_tls` writes; the layout is fixed so each service's prepare finds it."""

    home: Path

    @classmethod
    def at(cls, state_dir: Path) -> TlsFiles:
        return cls(state_dir / "tls")

    @property
    def ca_cert(self) -> Path:
        return self.home / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.home / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.home / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.home / "server.key"

    @property
    def keystore(self) -> Path:
        return self.home / "kafka.keystore.p12"

    @property
    def keystore_password_file(self) -> Path:
        return self.home / "kafka.keystore.password"

    def keystore_password(self) -> str:
        return self.keystore_password_file.read_text().strip()


def _name(common_name: str) -> object:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sans(hosts: tuple[str, ...]) -> object:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_ca(cert_path: Path, key_path: Path, common_name: str = "histoprompt test CA") -> None:
    """A self-signed CA certificate and its key, both PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)  # type: ignore[arg-type]
        .issuer_name(name)  # type: ignore[arg-type]
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)


def _load_ca(files: TlsFiles) -> tuple[object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    return cert, key


def sign(files: TlsFiles, public_key: object, subject: object, hosts: tuple[str, ...]) -> bytes:
    """A server certificate (PEM) for `hosts`, signed by the CA in `files`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert, ca_key = _load_ca(files)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)  # type: ignore[arg-type]
        .issuer_name(ca_cert.subject)  # type: ignore[attr-defined]
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(_sans(hosts), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def make_server_cert(files: TlsFiles, hosts: tuple[str, ...] = HOSTS) -> None:
    """server.crt / server.key (PEM, RSA: MinIO and Triton both take it) for `hosts`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files.server_cert.write_bytes(sign(files, key.public_key(), _name(hosts[-1]), hosts))
    files.server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    files.server_key.chmod(0o600)


def _keytool(keytool: str, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv
            [keytool, *args],
            input=stdin,
            capture_output=True,
            timeout=_KEYTOOL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise StackError(f"keytool failed: {err}", service="kafka") from err
    if done.returncode != 0:
        why = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise StackError(f"keytool {args[0]} failed: {why[-1] if why else ''}", service="kafka")
    return done.stdout


def make_kafka_keystore(files: TlsFiles, keytool: str = "keytool") -> None:
    """Kafka's PKCS12 keystore: keytool makes the key pair and its signing request, the CA
    signs it, keytool imports the CA and the signed certificate back (the usual keytool way,
    so the keystore is one Java itself wrote)."""
    from cryptography import x509

    password = secrets.token_urlsafe(18)
    files.keystore_password_file.write_text(password)
    files.keystore_password_file.chmod(0o600)
    files.keystore.unlink(missing_ok=True)
    store = ["-keystore", str(files.keystore), "-storetype", "PKCS12", "-storepass", password]
    san = ",".join(f"ip:{h}" if h.replace(".", "").isdigit() else f"dns:{h}" for h in HOSTS)
    _keytool(
        keytool, "-genkeypair", *store, "-alias", _KEYSTORE_ALIAS, "-keyalg", "RSA",
        "-keysize", "2048", "-validity", str(_VALID_DAYS), "-dname", "CN=localhost",
        "-ext", f"SAN={san}", "-noprompt",
    )  # fmt: skip
    csr_pem = _keytool(keytool, "-certreq", *store, "-alias", _KEYSTORE_ALIAS)
    csr = x509.load_pem_x509_csr(csr_pem)
    signed = sign(files, csr.public_key(), csr.subject, HOSTS)
    _keytool(
        keytool, "-importcert", *store, "-alias", "ca", "-file", str(files.ca_cert),
        "-noprompt", "-trustcacerts",
    )  # fmt: skip
    _keytool(
        keytool, "-importcert", *store, "-alias", _KEYSTORE_ALIAS, "-noprompt", "-trustcacerts",
        stdin=signed,
    )  # fmt: skip


def make_tls(state_dir: Path, keytool: str = "keytool") -> TlsFiles:
    """Everything the TLS mode needs, fresh: CA, server certificate, Kafka keystore."""
    files = TlsFiles.at(state_dir)
    files.home.mkdir(parents=True, exist_ok=True)
    make_ca(files.ca_cert, files.ca_key)
    make_server_cert(files)
    make_kafka_keystore(files, keytool)
    return files
