"""Secrets stay out of every settings class's repr, str and JSON dump (what
`histoprompt-ingest settings` prints), while the clients still get the values."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from histoprompt.client.settings import ClientSettings
from histoprompt.core.settings import ConnectionSettings
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack.settings import StackSettings

S3_SECRET = "s3-secret-unit-7f3a"
KAFKA_PASSWORD = "kafka-pw-unit-91c2"


@pytest.mark.parametrize("cls", [ConnectionSettings, IngestSettings, ClientSettings, StackSettings])
def test_secrets_are_masked_but_usable(
    cls: type[ConnectionSettings], clean_histoprompt_env: None
) -> None:
    s = cls(
        s3_secret_key=SecretStr(S3_SECRET),
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
        kafka_sasl_password=SecretStr(KAFKA_PASSWORD),
    )
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert S3_SECRET not in text and KAFKA_PASSWORD not in text
    assert s.kafka_config()["sasl_plain_password"] == KAFKA_PASSWORD
    assert s.s3_secret_key.get_secret_value() == S3_SECRET
