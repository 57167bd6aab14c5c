"""Clients for the backing services, built lazily, with failures as project errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from histoprompt.core.errors import (
    HistopromptError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer
    from minio import Minio
    from tritonclient.grpc import InferenceServerClient

    from histoprompt.client.settings import ClientSettings

__all__ = [
    "kafka_consumer",
    "kafka_errors",
    "kafka_producer",
    "minio_client",
    "triton_client",
    "triton_errors",
]

_HINT = "is the stack up? (`histoprompt stack status`)"


def minio_client(settings: ClientSettings) -> Minio:
    """The project's minio client, with one quick retry so "unreachable" comes in seconds."""
    from histoprompt.core.s3 import make_minio

    return make_minio(settings, connect_timeout=settings.connect_timeout, retries=1)


@contextmanager
def kafka_errors(settings: ClientSettings, what: str) -> Iterator[None]:
    """kafka-python failures as project errors naming `what` and the bootstrap servers."""
    from kafka import errors as kerr

    try:
        yield
    except (kerr.KafkaConnectionError, kerr.BrokerNotAvailableError) as err:
        _raise_if_refused(settings, err)
        raise ServiceUnavailableError(
            f"{what}: Kafka unreachable at {settings.kafka_bootstrap}; {_HINT}"
        ) from err
    except (kerr.SaslAuthenticationFailedError, kerr.TopicAuthorizationFailedError) as err:
        raise PermissionDeniedError(
            f"{what}: Kafka refused the credentials ({type(err).__name__}); "
            "check HISTOPROMPT_KAFKA_SASL_USERNAME / _PASSWORD"
        ) from err
    except kerr.KafkaTimeoutError as err:
        # kafka-python reports a refused certificate or SCRAM login as a timeout too.
        _raise_if_refused(settings, err)
        raise ServiceUnavailableError(
            f"{what}: Kafka unreachable or too slow at {settings.kafka_bootstrap}; {_HINT}"
        ) from err
    except kerr.KafkaError as err:
        raise ServiceUnavailableError(f"{what}: Kafka error {type(err).__name__}: {err}") from err


def _raise_if_refused(settings: ClientSettings, err: Exception) -> None:
    """The PermissionDeniedError behind a failed Kafka connection, if that is what it was."""
    from histoprompt.core.preflight import check_kafka

    try:
        check_kafka(settings)
    except PermissionDeniedError as refused:
        raise refused from err
    except ServiceUnavailableError:
        return


def _kafka_common(settings: ClientSettings) -> dict[str, Any]:
    ms = int(settings.connect_timeout * 1000)
    return {
        **settings.kafka_config(),
        "bootstrap_timeout_ms": ms,
        "request_timeout_ms": max(ms * 3, 15_000),
        "client_id": "histoprompt-cli",
    }


def kafka_producer(settings: ClientSettings) -> KafkaProducer:
    from kafka import KafkaProducer

    with kafka_errors(settings, "connecting a producer"):
        return KafkaProducer(
            **_kafka_common(settings),
            acks="all",
            max_block_ms=int(settings.connect_timeout * 1000) * 3,
        )


def kafka_consumer(settings: ClientSettings) -> KafkaConsumer:
    """A consumer without a group (it commits nothing); callers assign partitions."""
    from kafka import KafkaConsumer

    with kafka_errors(settings, "connecting a consumer"):
        return KafkaConsumer(**_kafka_common(settings), group_id=None, enable_auto_commit=False)


def triton_client(settings: ClientSettings) -> InferenceServerClient:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as err:  # pragma: no cover - a client dependency
        raise HistopromptError("tritonclient is missing: pip install 'tritonclient[grpc]'") from err
    return grpcclient.InferenceServerClient(settings.triton_url, **settings.triton_grpc_options())


@contextmanager
def triton_errors(settings: ClientSettings, what: str) -> Iterator[None]:
    """Triton status codes as project errors: bad request 4, unknown model 2, down 3."""
    from tritonclient.utils import InferenceServerException

    from histoprompt.core.preflight import tls_refused

    try:
        yield
    except InferenceServerException as err:
        status = str(err.status() or "")
        message = (err.message() or str(err)).strip()
        if tls_refused(err):
            raise PermissionDeniedError(
                f"{what}: Triton's TLS certificate at {settings.triton_url} is not trusted; "
                "check HISTOPROMPT_TRITON_SSL_ROOT_CERT"
            ) from err
        if "UNAVAILABLE" in status or "DEADLINE" in status:
            raise ServiceUnavailableError(
                f"{what}: Triton unreachable at {settings.triton_url}; {_HINT}"
            ) from err
        if "NOT_FOUND" in status or "unknown model" in message or "is not found" in message:
            raise NotFoundError(f"{what}: {message}") from err
        if "INVALID_ARG" in status or "INVALID" in status:
            raise InvalidInputError(f"{what}: {message}") from err
        if "UNAUTHENTICATED" in status or "PERMISSION" in status:
            raise PermissionDeniedError(f"{what}: Triton refused the request: {message}") from err
        raise ServiceUnavailableError(f"{what}: Triton error {status}: {message}") from err
