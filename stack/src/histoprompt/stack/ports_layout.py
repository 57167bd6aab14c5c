"""The ports one stack uses, all picked free on 127.0.0.1 when the stack starts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from histoprompt.stack.ports import allocate_ports


class StackPorts(BaseModel):
    """Every listening port of the stack (SeaweedFS needs one per internal server)."""

    model_config = ConfigDict(frozen=True)

    kafka: int
    kafka_controller: int
    kafka_ssl: int  # the TLS mode's SSL listener (SASL_SSL is on `kafka`)
    s3: int
    s3_grpc: int
    s3_console: int  # MinIO's console address (the console itself is switched off)
    weed_master: int
    weed_master_grpc: int
    weed_volume: int
    weed_volume_grpc: int
    weed_filer: int
    weed_filer_grpc: int
    triton_http: int
    triton_grpc: int
    triton_metrics: int
    prometheus: int
    ingest_metrics: int

    @classmethod
    def allocate(cls, *, ingest_metrics: int | None = None) -> StackPorts:
        """Pick distinct free loopback ports; `ingest_metrics` is kept when given."""
        names = [n for n in cls.model_fields if not (n == "ingest_metrics" and ingest_metrics)]
        picked = dict(zip(names, allocate_ports(len(names)), strict=True))
        if ingest_metrics:
            picked["ingest_metrics"] = ingest_metrics
        return cls(**picked)
