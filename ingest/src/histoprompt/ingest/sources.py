"""Open a slide job in S3 as a SlideReader: DICOM series, single DICOM, SVS/TIFF.

The format is sniffed from the first bytes (DICM at 128, TIFF magic), never from the key.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

from pydantic import ValidationError

from histoprompt.core.schemas import SeriesManifest
from histoprompt.ingest.codecs import GpuJpegDecoder
from histoprompt.ingest.dicom import DicomSlide, ReadLimits
from histoprompt.ingest.errors import SlideError
from histoprompt.ingest.events import SlideJob
from histoprompt.ingest.ranged import RangedFile, S3Object
from histoprompt.ingest.settings import IngestSettings
from histoprompt.ingest.slide import SlideReader
from histoprompt.ingest.tiff import CucimReader, TiffSlideReader, cucim_available

if TYPE_CHECKING:
    from minio import Minio

MAX_MANIFEST_BYTES = 1 << 20
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def limits_from(settings: IngestSettings) -> ReadLimits:
    return ReadLimits(
        max_pixels=settings.ingest_max_pixels,
        max_frame_pixels=settings.ingest_max_frame_pixels,
        coalesce_gap=settings.ingest_coalesce_gap,
        max_range=settings.ingest_max_range,
        frame_cache=settings.ingest_frame_cache,
        block_size=settings.ingest_block_size,
        block_cache_blocks=max(4, settings.ingest_block_cache_blocks // 4),
    )


def read_series_manifest(obj: S3Object) -> SeriesManifest:
    if obj.size > MAX_MANIFEST_BYTES:
        raise SlideError("series manifest is too large", code="bad_manifest")
    try:
        return SeriesManifest.model_validate_json(obj.read_range(0, obj.size))
    except ValidationError as err:
        raise SlideError("series manifest does not parse", code="bad_manifest") from err


def sniff(obj: S3Object) -> str:
    head = obj.read_range(0, min(obj.size, 132))
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] in TIFF_MAGIC:
        return "tiff"
    if not head:
        raise SlideError("object is empty", code="truncated")
    raise SlideError("object is neither DICOM nor TIFF", code="not_dicom")


class OpenedSlide:
    """A reader plus the S3 objects behind it (for GET counts and clean-up)."""

    def __init__(self, reader: SlideReader, objects: list[S3Object], tmp: object = None) -> None:
        self.reader = reader
        self.objects = objects
        self._tmp = tmp

    @property
    def gets(self) -> int:
        return sum(o.gets for o in self.objects)

    @property
    def bytes_read(self) -> int:
        return sum(o.bytes_read for o in self.objects)

    def close(self) -> None:
        self.reader.close()
        if self._tmp is not None:
            self._tmp.close()  # type: ignore[attr-defined]


def open_slide(
    client: Minio,
    job: SlideJob,
    settings: IngestSettings,
    gpu_decoder: GpuJpegDecoder | None = None,
) -> OpenedSlide:
    """Headers only are read here; pixels are fetched as tiles ask for them."""
    limits = limits_from(settings)
    if job.kind == "series":
        manifest = read_series_manifest(S3Object(client, job.bucket, job.key))
        objects = []
        for inst in manifest.instances:
            key = inst.key if "/" in inst.key else job.key.rsplit("/", 1)[0] + "/" + inst.key
            try:
                obj = S3Object(client, job.bucket, key)
            except SlideError as err:
                raise SlideError("a series instance is missing", code="missing_instance") from err
            if obj.size != inst.size:
                raise SlideError(
                    "a series instance differs in size from the manifest", code="missing_instance"
                )
            objects.append(obj)
        return OpenedSlide(DicomSlide(objects, limits, gpu_decoder), objects)
    obj = S3Object(client, job.bucket, job.key)
    kind = sniff(obj)
    if kind == "dicom":
        return OpenedSlide(DicomSlide([obj], limits, gpu_decoder), [obj])
    backend = settings.ingest_tiff_backend
    if backend == "cucim" or (backend == "auto" and cucim_available()):
        # cuCIM reads local paths only: this is the one whole-object download.
        tmp = tempfile.NamedTemporaryFile(suffix=".tiff")  # noqa: SIM115 - closed with the slide
        step = 8 * 1024 * 1024
        for off in range(0, obj.size, step):
            tmp.write(obj.read_range(off, min(step, obj.size - off)))
        tmp.flush()
        return OpenedSlide(CucimReader(tmp.name), [obj], tmp)
    fileobj = RangedFile(obj, settings.ingest_block_size, settings.ingest_block_cache_blocks)
    return OpenedSlide(TiffSlideReader(fileobj, settings.ingest_max_pixels), [obj])
