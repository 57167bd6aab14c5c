"""Uploading validated slides to the slides bucket: multipart, progress by bytes, manifest last.

Every check (slide format, bucket reachable, credentials, Kafka when events are published)
runs before the first byte goes up. If an upload fails or is interrupted, the objects this
submission already wrote are removed again and no series manifest is ever written, so the
ingest service never sees half a slide.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from histoprompt.core import names

if TYPE_CHECKING:
    from minio import Minio

    from histoprompt.client.settings import ClientSettings
    from histoprompt.client.slides import SlideFiles

__all__ = ["Uploaded", "check_bucket", "object_keys", "upload_slide"]

ProgressFn = Callable[[int], None]
MIB = 1024 * 1024


@dataclass(frozen=True)
class Uploaded:
    """A submitted slide: the object whose event triggers processing, and its slide_id."""

    path: str
    kind: str
    bucket: str
    key: str
    etag: str
    size: int
    slide_id: str
    objects: int


# DICOM goes up with a manifest, a single instance too: ingest then starts at once instead of
# waiting out the series settle window it applies to gateway uploads without a manifest.
_MANIFESTED = frozenset({"dicom-series", "dicom"})


def object_keys(slide: SlideFiles, prefix: str, token: str | None = None) -> list[str]:
    """Keys for the slide's files. File names are not reused: they may carry patient names."""
    base = f"{prefix.strip('/')}/{token or secrets.token_hex(8)}"
    if slide.kind in _MANIFESTED:
        return [f"{base}/instance-{i:04d}.dcm" for i in range(len(slide.files))]
    suffix = slide.files[0].suffix.lower() or ".tiff"
    return [f"{base}/slide{suffix}"]


def check_bucket(client: Minio, bucket: str) -> None:
    """NotFoundError / PermissionDeniedError / ServiceUnavailableError before any upload."""
    from histoprompt.core.errors import NotFoundError
    from histoprompt.core.results import s3_errors

    with s3_errors(f"checking bucket {bucket}"):
        exists = client.bucket_exists(bucket)
    if not exists:
        raise NotFoundError(
            f"slides bucket {bucket} does not exist; check HISTOPROMPT_SLIDES_BUCKET"
        )


class _Progress:
    """minio's progress protocol, forwarding byte counts to a callback."""

    def __init__(self, advance: ProgressFn) -> None:
        self._advance = advance

    def set_meta(self, object_name: str, total_length: int) -> None:
        return None

    def update(self, length: int) -> None:
        self._advance(length)


def upload_slide(
    client: Minio,
    settings: ClientSettings,
    slide: SlideFiles,
    advance: ProgressFn,
    token: str | None = None,
) -> Uploaded:
    """Upload one slide (DICOM: instances, then manifest.json); cleans up on failure."""
    from histoprompt.core.results import s3_errors
    from histoprompt.core.schemas import SeriesInstance, SeriesManifest, slide_id_for

    bucket = settings.slides_bucket
    keys = object_keys(slide, settings.upload_prefix, token)
    written: list[str] = []
    try:
        etag = ""
        for path, key in zip(slide.files, keys, strict=True):
            size = path.stat().st_size
            with s3_errors(f"uploading {path.name}"), path.open("rb") as fh:
                result = client.put_object(
                    bucket,
                    key,
                    fh,
                    size,
                    part_size=settings.part_size_mib * MIB,
                    num_parallel_uploads=1,
                    progress=_Progress(advance),
                )
            written.append(key)
            etag = (result.etag or "").strip('"')
        if slide.kind not in _MANIFESTED:
            size = slide.files[0].stat().st_size
            return Uploaded(
                str(slide.path),
                slide.kind,
                bucket,
                keys[0],
                etag,
                size,
                slide_id_for(bucket, keys[0], etag),
                1,
            )
        manifest = SeriesManifest.model_validate(
            {
                "instances": [
                    SeriesInstance(key=k, size=p.stat().st_size)
                    for p, k in zip(slide.files, keys, strict=True)
                ]
            }
        )
        data = manifest.model_dump_json(by_alias=True).encode()
        key = keys[0].rsplit("/", 1)[0] + "/" + names.SERIES_MANIFEST
        with s3_errors("writing the series manifest"):
            result = client.put_object(
                bucket, key, io.BytesIO(data), len(data), content_type="application/json"
            )
        etag = (result.etag or "").strip('"')
        return Uploaded(
            str(slide.path),
            slide.kind,
            bucket,
            key,
            etag,
            len(data),
            slide_id_for(bucket, key, etag),
            len(keys) + 1,
        )
    except BaseException:
        # KeyboardInterrupt included: remove finished instances so nothing half-uploaded stays.
        for key in written:
            try:
                client.remove_object(bucket, key)
            except Exception:  # noqa: S112 - best effort; the original error matters more
                continue
        raise
