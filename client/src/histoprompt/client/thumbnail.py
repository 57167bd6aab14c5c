"""Slide geometry and a thumbnail from the slide's source object in S3 (ranged reads only).

- TIFF/SVS: level-0 size from the first page; the thumbnail is the smallest pyramid level
  (tifffile; JPEG levels need imagecodecs, which the ingest package installs).
- DICOM-WSI (series manifest or one instance): the ingest package's DicomSlide reader
  (ranged reads, all transfer syntaxes it decodes) gives the levels and the smallest level as
  thumbnail; without histoprompt-ingest, the size comes from TotalPixelMatrix headers and the
  tile grid is drawn on a plain background.
Whatever cannot be read falls back to the extent of the tile grid.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, cast

from histoprompt.client.heatmap_render import SlideGeometry, grid_step

if TYPE_CHECKING:
    import pandas as pd
    from minio import Minio
    from PIL import Image

    from histoprompt.core.ranged import RangedFile
    from histoprompt.core.schemas import SourceRef

__all__ = ["slide_view"]

_MAX_THUMB_PIXELS = 32 * 1024 * 1024


def _open(client: Minio, bucket: str, key: str, block: int = 256 * 1024) -> RangedFile:
    """A seekable file over one S3 object that reads only the blocks asked for."""
    from histoprompt.core.ranged import RangedFile, S3Object

    return RangedFile(S3Object(client, bucket, key), block_size=block)


def _tiff_view(client: Minio, bucket: str, key: str) -> tuple[SlideGeometry, Image.Image | None]:
    import tifffile
    from PIL import Image

    with _open(client, bucket, key) as fh, tifffile.TiffFile(cast(IO[bytes], fh)) as tif:
        first = tif.pages.first
        geom = SlideGeometry(int(first.imagewidth), int(first.imagelength), "source TIFF")
        levels = tif.series[0].levels if tif.series else []
        smallest = min(levels, key=lambda s: s.size) if levels else None
        thumb = None
        if smallest is not None and smallest.size <= _MAX_THUMB_PIXELS:
            try:
                arr = smallest.asarray()
                thumb = Image.fromarray(arr.reshape(arr.shape[0], arr.shape[1], -1)[..., :3])
            except Exception:  # noqa: BLE001 - a codec may be missing; the grid still renders
                thumb = None
    return geom, thumb


def _dicom_keys(client: Minio, bucket: str, key: str) -> list[str]:
    import json

    from histoprompt.core.schemas import SeriesManifest

    if not key.endswith(".json"):
        return [key]
    with _open(client, bucket, key) as fh:
        manifest = SeriesManifest.model_validate(json.loads(fh.read()))
    return [i.key for i in manifest.instances]


def _dicom_view(client: Minio, bucket: str, key: str) -> tuple[SlideGeometry, Image.Image | None]:
    """Through histoprompt.ingest's DicomSlide when installed, else headers only."""
    keys = _dicom_keys(client, bucket, key)
    try:
        from histoprompt.ingest.dicom import DicomSlide
        from histoprompt.ingest.ranged import S3Object
        from histoprompt.ingest.settings import IngestSettings
        from histoprompt.ingest.slide import Region
        from histoprompt.ingest.sources import limits_from
    except ImportError:
        return _dicom_geometry(client, bucket, keys), None
    from PIL import Image

    limits = limits_from(IngestSettings(_env_file=None))
    reader = DicomSlide([S3Object(client, bucket, k) for k in keys], limits)
    try:
        level0, last = reader.levels[0], reader.levels[-1]
        geom = SlideGeometry(level0.width, level0.height, "source DICOM")
        if last.width * last.height > _MAX_THUMB_PIXELS:
            return geom, None
        (pixels,) = reader.read_regions(
            len(reader.levels) - 1, [Region(0, 0, last.width, last.height)]
        )
        return geom, Image.fromarray(pixels[..., :3])
    finally:
        reader.close()


def _dicom_geometry(client: Minio, bucket: str, keys: list[str]) -> SlideGeometry:
    import pydicom

    best = (0, 0)
    for k in keys:
        with _open(client, bucket, k, block=64 * 1024) as fh:
            ds = pydicom.dcmread(
                fh,
                stop_before_pixels=True,
                specific_tags=["TotalPixelMatrixColumns", "TotalPixelMatrixRows", "ImageType"],
            )
        size = (int(ds.get("TotalPixelMatrixColumns", 0)), int(ds.get("TotalPixelMatrixRows", 0)))
        if size[0] > best[0]:
            best = size
    if min(best) <= 0:
        raise ValueError("no TotalPixelMatrix size in the series")
    return SlideGeometry(best[0], best[1], "source DICOM")


def grid_geometry(tiles: pd.DataFrame) -> SlideGeometry:
    step = grid_step(tiles) or 1
    return SlideGeometry(
        int(tiles["x"].max()) + step, int(tiles["y"].max()) + step, "tile grid extent"
    )


def slide_view(
    client: Minio, source: SourceRef, tiles: pd.DataFrame
) -> tuple[SlideGeometry, Image.Image | None]:
    """Geometry and thumbnail for `source`; falls back to the tile grid."""
    try:
        if _sniff(client, source.bucket, source.key) == "tiff":
            return _tiff_view(client, source.bucket, source.key)
        return _dicom_view(client, source.bucket, source.key)
    except Exception:  # noqa: BLE001 - the source may be gone or unreadable; still draw
        return grid_geometry(tiles), None


def _sniff(client: Minio, bucket: str, key: str) -> str:
    """'tiff', 'dicom' or 'json' from the object's first bytes."""
    with _open(client, bucket, key, block=4096) as fh:
        head = fh.read(132)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return "dicom" if head[128:132] == b"DICM" else "json"
