"""Exit codes and the one place where errors become them.

0 ok, 1 usage (or an unexpected failure), 2 not found, 3 service unavailable, 4 invalid
input or refused. The documented table (README.md, "Exit codes") names the project errors
behind each code; tests/unit/test_cli_bad_input.py checks it against `_EXIT_CODES` and runs
every row of the README's bad-input table.

Refusals are 4, not 3: the service is up, and retrying will not help until the user fixes
HISTOPROMPT_S3_ACCESS_KEY / _SECRET_KEY, the Kafka SASL settings, or a CA file
(HISTOPROMPT_S3_CA_FILE, HISTOPROMPT_KAFKA_SSL_CAFILE, HISTOPROMPT_TRITON_SSL_ROOT_CERT).
`histoprompt-ingest run` exits 4 for the same refusals.
"""

from __future__ import annotations

import errno
from typing import Final

from histoprompt.core.errors import (
    ConfigError,
    HistopromptError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)

EXIT_OK: Final = 0
EXIT_USAGE: Final = 1
EXIT_NOT_FOUND: Final = 2
EXIT_UNAVAILABLE: Final = 3
EXIT_INVALID: Final = 4

__all__ = [
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "ClientError",
    "NotASlideError",
    "SlideFailedError",
    "exit_code_for",
    "translate",
]


class ClientError(HistopromptError):
    """A failure inside the CLI itself (not a backing service's)."""

    code = "client"


class NotASlideError(InvalidInputError):
    """A path that is not a DICOM-WSI series, an SVS or a TIFF slide."""

    code = "not_a_slide"


class SlideFailedError(HistopromptError):
    """The ingest service reported `failed` for a submitted slide."""

    code = "slide_failed"


# Checked in order: PermissionDeniedError before the generic types it might resemble.
_EXIT_CODES: Final[tuple[tuple[type[HistopromptError], int], ...]] = (
    (PermissionDeniedError, EXIT_INVALID),
    (ConfigError, EXIT_INVALID),
    (InvalidInputError, EXIT_INVALID),
    (NotFoundError, EXIT_NOT_FOUND),
    (ServiceUnavailableError, EXIT_UNAVAILABLE),
)

# Libraries whose own exceptions mean "could not talk to the service" when nothing more
# specific translated them at the call site.
_SERVICE_MODULES: Final = ("kafka", "urllib3", "minio", "tritonclient", "httpx", "grpc")


def exit_code_for(err: HistopromptError) -> int:
    """The process exit code for a project error."""
    for kind, code in _EXIT_CODES:
        if isinstance(err, kind):
            return code
    return EXIT_USAGE


def translate(exc: BaseException) -> HistopromptError | None:
    """A project error for a foreign exception that escaped its call site, else None."""
    if isinstance(exc, HistopromptError):
        return exc
    from histoprompt.core.preflight import tls_refused

    if tls_refused(exc):
        # Any client (urllib3 for S3, gRPC for Triton): we refused the service's certificate.
        return PermissionDeniedError(
            "a service's TLS certificate is not trusted; check HISTOPROMPT_S3_CA_FILE, "
            f"HISTOPROMPT_KAFKA_SSL_CAFILE, HISTOPROMPT_TRITON_SSL_ROOT_CERT ({_first_line(exc)})"
        )
    if isinstance(exc, ConnectionError) or (
        isinstance(exc, OSError) and exc.errno in {errno.ECONNREFUSED, errno.EHOSTUNREACH}
    ):
        return ServiceUnavailableError(f"connection failed: {exc}")
    module = type(exc).__module__
    if module.split(".")[0] in _SERVICE_MODULES:
        return ServiceUnavailableError(f"{module.split('.')[0]}: {type(exc).__name__}: {exc}")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
