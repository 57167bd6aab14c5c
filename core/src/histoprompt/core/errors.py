"""Exception types of histoprompt.core; every part derives its own from HistopromptError."""

from __future__ import annotations


class HistopromptError(Exception):
    """Root of every histoprompt error. `code` is a stable, machine-readable reason."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(HistopromptError):
    """A setting or a configuration file is missing or invalid."""

    code = "config"


class InvalidInputError(HistopromptError):
    """User or upstream input that can never succeed (bad gene set, bad event, ...)."""

    code = "invalid_input"


class NotFoundError(HistopromptError):
    """A named thing (slide, gene set, object, model) does not exist."""

    code = "not_found"


class ServiceUnavailableError(HistopromptError):
    """A backing service (Kafka, S3, Triton, Prometheus) cannot be reached."""

    code = "unavailable"


class PermissionDeniedError(HistopromptError):
    """A backing service refused our credentials."""

    code = "unauthorized"


class TransientError(ServiceUnavailableError):
    """A retryable failure of S3, Kafka or Triton: retry with backoff, then give up."""

    code = "unavailable"
