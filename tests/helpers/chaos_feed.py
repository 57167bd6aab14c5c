"""What a chaos run submits: a mix of SYNTHETIC slides, uploaded and announced as a scanner
gateway would, every message's partition and offset recorded for the offset audit.

Kinds: `tiff` (a pyramidal TIFF/SVS), `series_manifest` (DICOM-WSI instances, then
manifest.json), `series_gateway` (DICOM-WSI instances under UID-like names, one event
each, no manifest: ingest assembles them), and the bad ones: `poison` (a message that is
no S3 notification), `truncated` (a DICOM file cut short), `crash` (a slide whose worker
the harness kills each time it starts it, as an out-of-memory kill would).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histoprompt.core import names
from histoprompt.core.schemas import SeriesMember, series_slide_id
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series
from histoprompt.stack.feed import Uploaded, event_bytes, put_bytes, put_file, upload_series
from histoprompt.wsi.instance_header import series_key_for

GOOD_KINDS = ("tiff", "series_manifest", "series_gateway")
POISON_VALUES = (
    b"\x00\xffnot json at all",
    b'{"Records": "not a list"}',
    b'{"hello": "no records key"}',
)


@dataclass
class Item:
    """One submitted slide (or poison message); `prefix` is unique to it."""

    n: int
    kind: str
    prefix: str
    slide_id: str = ""
    series_key: str = ""
    # (partition, offset, object key or '') of every message published for it
    messages: list[tuple[int, int, str]] = field(default_factory=list)
    submitted_at: float = 0.0
    submitted_wall: float = 0.0  # time.time(), to compare with result manifests' `created`

    @property
    def bad(self) -> bool:
        return self.kind not in GOOD_KINDS


@dataclass
class Sources:
    """SYNTHETIC files written once per run; each DICOM series is its own (own UIDs)."""

    tmp: Path
    tiff: Path | None = None
    crash: Path | None = None

    def tiff_path(self) -> Path:
        if self.tiff is None:
            self.tiff = write_tiff(self.tmp / "slide.svs", 1536, 1536, levels=2, tile=256)
        return self.tiff

    def crash_path(self) -> Path:
        # Large enough to be in flight for a while: the kill lands mid-slide.
        if self.crash is None:
            self.crash = write_tiff(self.tmp / "crash.svs", 3072, 3072, levels=2, tile=512)
        return self.crash

    def series(self, n: int) -> tuple[list[Path], str]:
        import pydicom

        spec = DicomSeriesSpec(width=1024, height=768, levels=2, tile=256)
        paths = write_dicom_series(self.tmp / f"series-{n}", spec)
        ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
        return paths, series_key_for(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))


def plan(n_good: int, *, poison: int = 0, truncated: int = 0, crash: int = 0) -> list[str]:
    """Kinds in submission order: the good kinds in turn, the bad ones spread among them."""
    kinds = [GOOD_KINDS[i % len(GOOD_KINDS)] for i in range(n_good)]
    bad = ["poison"] * poison + ["truncated"] * truncated + ["crash"] * crash
    rng = random.Random(17)  # noqa: S311 - a fixed, reproducible order
    for kind in bad:
        kinds.insert(rng.randrange(1, len(kinds) + 1), kind)
    return kinds


class Feeder:
    """Uploads items to the slides bucket and publishes their notifications."""

    def __init__(self, minio: Any, producer: Any, bucket: str, sources: Sources, run: str) -> None:
        self.minio = minio
        self.producer = producer
        self.bucket = bucket
        self.sources = sources
        self.run = run
        # Called with a crash item before its notification goes out (arms the kill).
        self.arm: Callable[[Item], None] | None = None

    def _send(self, item: Item, value: bytes, key: str) -> None:
        meta = self.producer.send(names.TOPIC_INCOMING, key=key.encode() or None, value=value).get(
            timeout=60
        )
        item.messages.append((meta.partition, meta.offset, key))

    def _announce(self, item: Item, up: Uploaded) -> None:
        self._send(item, event_bytes(up), up.key)

    def submit(self, n: int, kind: str) -> Item:
        item = Item(n=n, kind=kind, prefix=f"chaos/{self.run}/{n:03d}-{kind}")
        if kind in ("tiff", "crash"):
            path = self.sources.tiff_path() if kind == "tiff" else self.sources.crash_path()
            up = put_file(self.minio, self.bucket, f"{item.prefix}/slide.svs", path)
            item.slide_id = up.slide_id
            if self.arm is not None:
                self.arm(item)
            self._announce(item, up)
        elif kind == "series_manifest":
            paths, item.series_key = self.sources.series(n)
            up = upload_series(self.minio, self.bucket, item.prefix, paths)
            item.slide_id = up.slide_id
            for key in up.member_keys:
                self._announce(item, Uploaded(up.bucket, key, "0", 0))
            self._announce(item, up)
        elif kind == "series_gateway":
            import pydicom

            paths, item.series_key = self.sources.series(n)
            members = []
            for path in paths:
                key = f"{item.prefix}/1.2.826.0.1.3680043.{uuid.uuid4().int % 10**12}.dcm"
                up = put_file(self.minio, self.bucket, key, path)
                flavor = str(pydicom.dcmread(path, stop_before_pixels=True).ImageType[2])
                members.append(SeriesMember(key=key, etag=up.etag, size=up.size, flavor=flavor))
                self._announce(item, up)
            item.slide_id = series_slide_id(self.bucket, item.series_key, members)
        elif kind == "truncated":
            # its header is whole: ingest records it as a series instance first
            paths, item.series_key = self.sources.series(n)
            data = paths[0].read_bytes()
            up = put_bytes(
                self.minio, self.bucket, f"{item.prefix}/cut.dcm", data[: len(data) // 3]
            )
            item.slide_id = up.slide_id
            self._announce(item, up)
        elif kind == "poison":
            self._send(item, POISON_VALUES[n % len(POISON_VALUES)], item.prefix)
        else:
            raise ValueError(kind)
        return item
