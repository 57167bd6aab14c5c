"""histoprompt.core.s3.make_minio: the clients ingest and the CLI build."""

from __future__ import annotations

import pytest
import urllib3

from histoprompt.core.s3 import make_minio
from histoprompt.core.settings import ConnectionSettings


@pytest.mark.parametrize("kwargs", [{"retries": 0}, {"connect_timeout": 2.0}, {"retries": 3}])
def test_own_pool_keeps_connections_for_concurrent_ranged_reads(kwargs: dict[str, float]) -> None:
    """Ranged reads run in threads: a one-connection pool (urllib3's default) would reconnect
    on every concurrent GET. The SDK's private attribute is the only place the pool shows."""
    client = make_minio(ConnectionSettings(_env_file=None), **kwargs)  # type: ignore[arg-type]
    pool = client._http  # noqa: SLF001
    assert isinstance(pool, urllib3.PoolManager)
    assert pool.connection_pool_kw["maxsize"] >= 8
    retries = urllib3.Retry.from_int(pool.connection_pool_kw["retries"])
    if kwargs.get("retries") == 0:
        assert retries.total is False  # the caller counts attempts itself
