"""IngestSettings: the one settings class of the ingest service (`HISTOPROMPT_INGEST_*`)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from histoprompt.core.modelspec import MAX_TILE_BATCH
from histoprompt.core.settings import ConnectionSettings
from histoprompt.wsi.limits import ReadLimits, TiffBackend
from histoprompt.wsi.scoring import ScoringOptions

CommaList = Annotated[tuple[str, ...], NoDecode]


class IngestSettings(ConnectionSettings):
    """Connections (inherited) plus the ingest service's own knobs."""

    env_namespaces: ClassVar[tuple[str, ...]] = ("INGEST_",)

    ingest_group_id: str = Field("histoprompt-ingest", description="Kafka consumer group")
    ingest_concurrency: int = Field(1, ge=1, le=64, description="slides in flight per replica")
    ingest_batch_size: int = Field(
        32, ge=1, le=MAX_TILE_BATCH, description="tiles per patch_embed request"
    )
    ingest_max_inflight: int = Field(
        4, ge=1, le=64, description="patch_embed requests in flight per slide"
    )
    ingest_triton_shared_memory: bool = Field(
        False,
        description="patch_embed tiles through system shared memory: Triton on this host only",
    )
    ingest_max_attempts: int = Field(
        3, ge=1, le=20, description="tries per delivery on transient errors before the DLQ"
    )
    ingest_retry_base_s: float = Field(0.5, gt=0, description="first backoff step")
    ingest_allowed_buckets: CommaList = Field(
        (), description="comma-separated; empty means only HISTOPROMPT_SLIDES_BUCKET"
    )
    ingest_allowed_prefixes: CommaList = Field(
        (), description="comma-separated key folders ('/' appended); empty allows every key"
    )
    ingest_series_member_glob: str = Field(
        "instance-*.dcm", description="objects of a DICOM series: wait for its manifest.json"
    )
    ingest_series_settle_s: float = Field(
        30.0, gt=0, description="a DICOM-WSI series with no new instance for this long is complete"
    )
    ingest_max_pixels: int = Field(
        100_000 * 100_000, gt=0, description="decompression-bomb guard on level-0 pixels"
    )
    ingest_max_frame_pixels: int = Field(
        4096 * 4096, gt=0, description="largest DICOM frame or TIFF tile/strip, before decode"
    )
    ingest_max_object_bytes: int = Field(
        1 << 36, gt=0, description="largest slide object read (too_large before any GET)"
    )
    ingest_min_tissue_fraction: float = Field(0.25, ge=0.0, le=1.0)
    ingest_mask_max_px: int = Field(1024, ge=64, description="longest edge of the tissue mask")
    ingest_mpp_tolerance: float = Field(
        0.1, ge=0.0, description="a level this much coarser than the target still counts"
    )
    ingest_block_size: int = Field(256 * 1024, ge=4096, description="ranged-read cache block")
    ingest_block_cache_blocks: int = Field(64, ge=1)
    ingest_coalesce_gap: int = Field(64 * 1024, ge=0, description="merge ranges this close")
    ingest_max_range: int = Field(16 * 1024 * 1024, ge=65536, description="largest single GET")
    ingest_frame_cache: int = Field(256, ge=16, description="decoded frames kept per slide")
    ingest_decoder: str = Field("auto", pattern="^(auto|cpu|gpu)$")
    ingest_tiff_backend: TiffBackend = Field("auto")
    ingest_triton_timeout_s: float = Field(120.0, gt=0)
    ingest_metrics_port: int = Field(9108, ge=0, le=65535, description="0 disables /metrics")
    ingest_metrics_host: str = Field("127.0.0.1", description="bind address of /metrics")
    ingest_shutdown_deadline_s: float = Field(25.0, gt=0)
    ingest_max_poll_interval_s: float = Field(
        600.0, ge=2, description="Kafka max.poll.interval; polling goes on while slides run"
    )
    ingest_session_timeout_s: float = Field(
        45.0, ge=1, description="Kafka session timeout (within the broker's group bounds)"
    )
    ingest_group_instance_id: str | None = Field(
        None, description="static group membership: a restarted worker takes its partitions back"
    )
    ingest_poll_timeout_s: float = Field(0.5, gt=0)
    ingest_liveness_timeout_s: float = Field(120.0, gt=0)
    ingest_slide_deadline_s: float = Field(
        3600.0, gt=0, description="one slide's processing; past it: DLQ deadline_exceeded"
    )
    ingest_max_deliveries: int = Field(
        3, ge=1, le=100, description="deliveries of one message (crashes included) before DLQ"
    )

    @field_validator("ingest_allowed_buckets", "ingest_allowed_prefixes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("ingest_allowed_prefixes")
    @classmethod
    def _folders(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # A prefix is a folder: "scanner" must not also admit "scanner-evil/...".
        return tuple(p if p.endswith("/") else p + "/" for p in value)

    def read_limits(self) -> ReadLimits:
        """The slide readers' bounds from these settings."""
        return ReadLimits(
            max_pixels=self.ingest_max_pixels,
            max_frame_pixels=self.ingest_max_frame_pixels,
            max_object_bytes=self.ingest_max_object_bytes,
            coalesce_gap=self.ingest_coalesce_gap,
            max_range=self.ingest_max_range,
            frame_cache=self.ingest_frame_cache,
            block_size=self.ingest_block_size,
            block_cache_blocks=max(4, self.ingest_block_cache_blocks // 4),
            tiff_block_cache_blocks=self.ingest_block_cache_blocks,
            tiff_backend=self.ingest_tiff_backend,
        )

    def scoring_options(self) -> ScoringOptions:
        """Tiling and batching of the shared slide processor from these settings."""
        return ScoringOptions(
            min_tissue=self.ingest_min_tissue_fraction,
            mask_max_px=self.ingest_mask_max_px,
            mpp_tolerance=self.ingest_mpp_tolerance,
            batch_size=self.ingest_batch_size,
            max_inflight=self.ingest_max_inflight,
            shared_memory=self.ingest_triton_shared_memory,
        )

    def allowed_buckets(self) -> tuple[str, ...]:
        return self.ingest_allowed_buckets or (self.slides_bucket,)
