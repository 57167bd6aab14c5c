"""Fixtures the ingest integration modules share: the demo model in the session stack's
Triton, an S3 client and a Kafka producer on it, and watchers on the results and DLQ
topics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from histoprompt.core import names
from histoprompt.core.s3 import make_minio
from histoprompt.stack.feed import TopicWatcher, make_producer
from histoprompt.stack.handle import StackHandle


@pytest.fixture(scope="module")
def served_model(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> object:
    """The demo bundle (tiny UNTRAINED encoder, SYNTHETIC alignment) loaded in Triton, once per
    module (before any test changes the cwd: the demo bundle cache is relative to it)."""
    from histoprompt.stack.ingest_demo import load_demo_model

    return load_demo_model(
        stack.triton_grpc, stack.model_repository, tmp_path_factory.mktemp("demo")
    )


@pytest.fixture
def results(stack: StackHandle) -> Iterator[TopicWatcher]:
    watcher = TopicWatcher(stack.settings, names.TOPIC_RESULTS)
    yield watcher
    watcher.close()


@pytest.fixture
def dlq(stack: StackHandle) -> Iterator[TopicWatcher]:
    watcher = TopicWatcher(stack.settings, names.TOPIC_DLQ)
    yield watcher
    watcher.close()


@pytest.fixture(scope="module")
def minio(stack: StackHandle) -> object:
    return make_minio(stack.settings)


@pytest.fixture(scope="module")
def producer(stack: StackHandle) -> Iterator[object]:
    p = make_producer(stack.settings)
    yield p
    p.close()
