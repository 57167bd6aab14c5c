"""Open a slide as a SlideReader, from S3 or from local files: DICOM series, single DICOM,
SVS/TIFF.

The format is sniffed from the first bytes (DICM at 128, TIFF magic), never from the name.
Only headers are read on open; pixels are fetched as tiles ask for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import ValidationError

from histoprompt.core.object_keys import key_problem
from histoprompt.core.schemas import SeriesManifest
from histoprompt.wsi.codecs import GpuJpegDecoder
from histoprompt.wsi.dicom import DicomSlide
from histoprompt.wsi.errors import ObjectMissingError, SlideError
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.rangecache import TiffRangeCache
from histoprompt.wsi.ranged import ByteSource, LocalFileSource, RangedFile, S3Object
from histoprompt.wsi.slide import SlideReader
from histoprompt.wsi.tiff import CucimReader, TiffSlideReader, cucim_available
from histoprompt.wsi.tiff_ifds import check_ifd_chain

if TYPE_CHECKING:
    from minio import Minio

__all__ = [
    "OpenedSlide",
    "SlideFormat",
    "check_object_size",
    "manifest_member_key",
    "SlideObject",
    "open_instances",
    "open_local",
    "open_slide",
    "open_sources",
    "read_series_manifest",
    "sniff",
]

MAX_MANIFEST_BYTES = 1 << 20
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
SlideFormat = Literal["dicom", "tiff"]


class SlideObject(Protocol):
    """Where a slide is in S3: one object, or a series manifest (`kind == "series"`).
    `instances` (an assembled series) is opened with `open_instances` instead."""

    @property
    def bucket(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> Literal["series", "single", "instances"]: ...


def read_series_manifest(obj: ByteSource) -> SeriesManifest:
    if obj.size > MAX_MANIFEST_BYTES:
        raise SlideError("series manifest is too large", code="bad_manifest")
    try:
        return SeriesManifest.model_validate_json(obj.read_range(0, obj.size))
    except ValidationError as err:
        raise SlideError("series manifest does not parse", code="bad_manifest") from err


def check_object_size(obj: ByteSource, limits: ReadLimits) -> None:
    """SlideError `too_large` for an object over ReadLimits.max_object_bytes (its size is
    known from the stat or the file system, before any of its bytes are read)."""
    if obj.size > limits.max_object_bytes:
        raise SlideError(
            f"slide object is {obj.size} bytes, over the limit of {limits.max_object_bytes} "
            "(HISTOPROMPT_INGEST_MAX_OBJECT_BYTES)",
            code="too_large",
        )


def sniff(obj: ByteSource) -> SlideFormat:
    """'dicom' or 'tiff' from the first 132 bytes; SlideError for anything else."""
    head = obj.read_range(0, min(obj.size, 132))
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] in TIFF_MAGIC:
        return "tiff"
    if not head:
        raise SlideError("object is empty", code="truncated")
    raise SlideError("object is neither DICOM nor TIFF", code="not_dicom")


class OpenedSlide:
    """A reader plus the byte sources behind it (for GET counts and clean-up)."""

    def __init__(
        self, reader: SlideReader, objects: Sequence[ByteSource], tmp: object = None
    ) -> None:
        self.reader = reader
        self.objects = list(objects)
        self._tmp = tmp

    @property
    def gets(self) -> int:
        return sum(o.gets for o in self.objects)

    @property
    def bytes_read(self) -> int:
        return sum(int(getattr(o, "bytes_read", 0)) for o in self.objects)

    def close(self) -> None:
        self.reader.close()
        if self._tmp is not None:
            self._tmp.close()  # type: ignore[attr-defined]

    def __enter__(self) -> OpenedSlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def manifest_member_key(manifest_key: str, member: str) -> str:
    """The object key of a series manifest's instance: a bare name lies next to the
    manifest. A manifest may name only objects in its own folder, so one uploaded under an
    allowed prefix cannot pull objects from elsewhere (SlideError `unsafe_key`)."""
    folder = manifest_key.rsplit("/", 1)[0] + "/" if "/" in manifest_key else ""
    key = member if "/" in member else folder + member
    problem = key_problem(key)
    if problem is not None:
        raise SlideError(f"series manifest names a refused key: {problem}", code="unsafe_key")
    if not key.startswith(folder) or "/" in key[len(folder) :]:
        raise SlideError(
            "series manifest names an object outside its own folder", code="unsafe_key"
        )
    return key


def _series_objects(client: Minio, ref: SlideObject, limits: ReadLimits) -> list[S3Object]:
    manifest = read_series_manifest(S3Object(client, ref.bucket, ref.key))
    objects = []
    for inst in manifest.instances:
        key = manifest_member_key(ref.key, inst.key)
        try:
            obj = S3Object(client, ref.bucket, key)
        except ObjectMissingError as err:
            raise SlideError("a series instance is missing", code="missing_instance") from err
        if obj.size != inst.size:
            raise SlideError(
                "a series instance differs in size from the manifest", code="missing_instance"
            )
        check_object_size(obj, limits)
        objects.append(obj)
    return objects


def _open_tiff(obj: ByteSource, limits: ReadLimits, local_path: Path | None = None) -> OpenedSlide:
    check_ifd_chain(obj)  # before tifffile or cuCIM walk it without bounds
    backend = limits.tiff_backend
    if backend == "cucim" or (backend == "auto" and cucim_available()):
        if local_path is not None:
            return OpenedSlide(CucimReader(str(local_path)), [obj])
        # cuCIM opens paths only: a sparse local file holds the TIFF structure and, fetched
        # before each read, the tiles that read covers; never the whole object.
        cache = TiffRangeCache(obj, limits)
        try:
            reader = CucimReader(cache.path, prepare=cache.ensure_regions)
        except BaseException:
            cache.close()
            raise
        return OpenedSlide(reader, [obj], cache)
    fileobj = RangedFile(
        obj, limits.block_size, limits.tiff_block_cache_blocks, max_read=limits.max_range
    )
    return OpenedSlide(TiffSlideReader(fileobj, limits), [obj])


def open_slide(
    client: Minio,
    ref: SlideObject,
    limits: ReadLimits,
    gpu_decoder: GpuJpegDecoder | None = None,
) -> OpenedSlide:
    """The slide `ref` names in S3, read by ranged GETs."""
    if ref.kind == "instances":
        raise SlideError("an assembled series opens with open_instances", code="bad_slide")
    if ref.kind == "series":
        objects = _series_objects(client, ref, limits)
        return OpenedSlide(DicomSlide(objects, limits, gpu_decoder), objects)
    obj = S3Object(client, ref.bucket, ref.key)
    check_object_size(obj, limits)
    if sniff(obj) == "dicom":
        return OpenedSlide(DicomSlide([obj], limits, gpu_decoder), [obj])
    return _open_tiff(obj, limits)


def open_instances(
    client: Minio,
    bucket: str,
    instances: Sequence[tuple[str, int]],
    limits: ReadLimits,
    gpu_decoder: GpuJpegDecoder | None = None,
) -> OpenedSlide:
    """A DICOM-WSI series given as its (key, size) instances, e.g. assembled by ingest from
    bucket notifications: exactly these objects are opened. A missing instance, or one whose
    size changed since it was seen, fails the slide (`missing_instance`)."""
    if not instances:
        raise SlideError("series has no VOLUME instance", code="not_wsi")
    objects = []
    for key, size in instances:
        try:
            obj = S3Object(client, bucket, key)
        except ObjectMissingError as err:
            raise SlideError("a series instance is missing", code="missing_instance") from err
        if obj.size != size:
            raise SlideError(
                "a series instance changed size since it arrived", code="missing_instance"
            )
        check_object_size(obj, limits)
        objects.append(obj)
    return OpenedSlide(DicomSlide(objects, limits, gpu_decoder), objects)


def open_local(
    files: Sequence[Path],
    limits: ReadLimits,
    gpu_decoder: GpuJpegDecoder | None = None,
) -> OpenedSlide:
    """A slide from local files: one TIFF/SVS or DICOM file, or the instances of a series."""
    if not files:
        raise SlideError("no slide files given", code="missing_object")
    sources = [LocalFileSource(p) for p in files]
    return open_sources(sources, limits, gpu_decoder, local_path=files[0])


def open_sources(
    sources: Sequence[ByteSource],
    limits: ReadLimits,
    gpu_decoder: GpuJpegDecoder | None = None,
    local_path: Path | None = None,
) -> OpenedSlide:
    """A slide from byte sources already at hand (local files, bytes in memory): one TIFF/SVS
    or DICOM object, or the instances of a series. `local_path` is the first source's file,
    for cuCIM."""
    if not sources:
        raise SlideError("no slide objects given", code="missing_object")
    for src in sources:
        check_object_size(src, limits)
    if len(sources) == 1 and sniff(sources[0]) == "tiff":
        return _open_tiff(sources[0], limits, local_path=local_path)
    for src in sources:
        if sniff(src) != "dicom":
            raise SlideError("a series member is not DICOM", code="not_dicom")
    return OpenedSlide(DicomSlide(sources, limits, gpu_decoder), sources)
