"""Before a series is claimed, the folders of its instances are listed in the slides bucket.

Notifications are hints; the bucket is the truth. An instance that is already stored but
whose notification is still on its way (behind a dead worker's partition, or an outage's
retries) would otherwise reach its series after the settle window, be ignored as late, and
leave the slide processed without it. Found here, it joins before the claim, and its
notification, when it comes, is a redelivery of a claimed member.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from histoprompt.core import names
from histoprompt.core.results import s3_errors
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.instance_header import InstanceHeader, read_instance_header
from histoprompt.wsi.ranged import S3Object

if TYPE_CHECKING:
    from minio import Minio

# Headers read per sweep at most: a folder shared by many slides costs bounded GETs.
MAX_SWEPT_OBJECTS = 64


@dataclass(frozen=True)
class SweptInstance:
    key: str
    etag: str
    size: int
    header: InstanceHeader


def unseen_instances(
    minio: Minio,
    bucket: str,
    series_key: str,
    known_keys: Iterable[str],
    member_glob: str,
) -> list[SweptInstance]:
    """Instances of `series_key` stored next to the known ones but not among them. Objects a
    manifest governs (`member_glob`, the manifest itself) and non-DICOM objects are left
    to their own path."""
    known = set(known_keys)
    folders = sorted({k.rsplit("/", 1)[0] + "/" if "/" in k else "" for k in known})
    found: list[SweptInstance] = []
    read = 0
    for folder in folders:
        with s3_errors("listing a series folder"):
            listed = list(minio.list_objects(bucket, prefix=folder))
        for obj in listed:
            key = obj.object_name or ""
            base = key.rsplit("/", 1)[-1]
            if (
                key in known
                or getattr(obj, "is_dir", False)
                or base == names.SERIES_MANIFEST
                or fnmatch.fnmatch(base, member_glob)
            ):
                continue
            if read >= MAX_SWEPT_OBJECTS:
                return found
            read += 1
            try:
                header = read_instance_header(S3Object(minio, bucket, key))
            except SlideError:
                continue  # not a DICOM-WSI instance: its own notification makes it a slide
            if header.series_key == series_key:
                etag = (obj.etag or "").strip('"')
                found.append(SweptInstance(key, etag, int(obj.size or 0), header))
    return found
