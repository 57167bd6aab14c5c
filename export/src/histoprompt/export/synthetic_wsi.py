"""SYNTHETIC DICOM-WSI series: one VL Whole Slide Microscopy Image Storage instance per level.

Torch-free. Pixels come from a `synthetic_tiles` generator and frames are written one at a
time, so a 50k x 50k px slide never sits in memory. Every file says SYNTHETIC
(SeriesDescription). TILED_FULL or TILED_SPARSE, JPEG baseline / JPEG 2000 / JPEG-LS
(encapsulated, Basic or Extended Offset Table) or uncompressed explicit VR little endian, RGB
or MONOCHROME2. Optional PHI-bearing attributes exist only so tests can prove they never
leak. Pyramidal TIFF/SVS: `synthetic_tiff`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from histoprompt.core.schemas import SeriesInstance, SeriesManifest
from histoprompt.export.synthetic_tiles import SYNTHETIC, TileFn, synthetic_tissue

__all__ = [
    "DicomSeriesSpec",
    "TransferSyntax",
    "write_dicom_series",
    "write_non_wsi_dicom",
    "write_series_manifest",
]

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


class TransferSyntax(StrEnum):
    explicit_le = "1.2.840.10008.1.2.1"
    jpeg_baseline = "1.2.840.10008.1.2.4.50"
    jpeg2000 = "1.2.840.10008.1.2.4.90"  # lossless-only J2K syntax: we write reversible
    jpegls = "1.2.840.10008.1.2.4.80"

    @property
    def encapsulated(self) -> bool:
        return self is not TransferSyntax.explicit_le


@dataclass(frozen=True)
class DicomSeriesSpec:
    """What to write. Sizes in pixels at level 0; each further level halves them."""

    width: int
    height: int
    levels: int = 2
    tile: int = 256
    mpp: float = 0.5
    syntax: TransferSyntax = TransferSyntax.jpeg_baseline
    sparse: bool = False
    monochrome: bool = False
    extended_offset_table: bool = False
    basic_offset_table: bool = True
    phi: dict[str, str] = field(default_factory=dict)
    with_label: bool = False
    with_overview: bool = False
    jpeg_quality: int = 85
    seed: int = 0


def _level_dims(spec: DicomSeriesSpec, level: int) -> tuple[int, int]:
    return max(1, spec.width >> level), max(1, spec.height >> level)


def _encode(frame: np.ndarray, spec: DicomSeriesSpec) -> bytes:
    import imagecodecs

    if spec.syntax is TransferSyntax.jpeg_baseline:
        return bytes(imagecodecs.jpeg8_encode(frame, level=spec.jpeg_quality))
    if spec.syntax is TransferSyntax.jpeg2000:
        return bytes(imagecodecs.jpeg2k_encode(frame, level=0, codecformat="J2K", reversible=True))
    if spec.syntax is TransferSyntax.jpegls:
        return bytes(imagecodecs.jpegls_encode(np.ascontiguousarray(frame), level=0))
    return np.ascontiguousarray(frame).tobytes()


def _frame(tile_fn: TileFn, spec: DicomSeriesSpec, level: int, col: int, row: int) -> np.ndarray:
    """One frame (always spec.tile square; outside the image filled with background)."""
    w, h = _level_dims(spec, level)
    x, y = col * spec.tile, row * spec.tile
    cw, ch = min(spec.tile, w - x), min(spec.tile, h - y)
    out = np.full((spec.tile, spec.tile, 3), 255, dtype=np.uint8)
    out[:ch, :cw] = tile_fn(level, x, y, cw, ch)
    if spec.monochrome:
        gray = out.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(gray, 0, 255).astype(np.uint8)
    return out


def _dataset(spec: DicomSeriesSpec, level: int, uids: dict[str, str], n_frames: int):  # noqa: ANN202
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    w, h = _level_dims(spec, level)
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(WSI_SOP_CLASS)
    sop_uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = UID(spec.syntax.value)
    ds.file_meta = meta
    ds.SOPClassUID = WSI_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality = "SM"
    ds.SeriesDescription = SYNTHETIC
    ds.ImageComments = "SYNTHETIC slide written by histoprompt.export.synthetic_wsi"
    ds.Manufacturer = "histoprompt SYNTHETIC"
    ds.InstanceNumber = level + 1
    ds.ImageType = (
        ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        if level == 0
        else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    )
    for key, value in spec.phi.items():
        setattr(ds, key, value)
    ds.Rows = spec.tile
    ds.Columns = spec.tile
    ds.TotalPixelMatrixColumns = w
    ds.TotalPixelMatrixRows = h
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.NumberOfFrames = n_frames
    ds.DimensionOrganizationType = "TILED_SPARSE" if spec.sparse else "TILED_FULL"
    mpp_mm = spec.mpp * (2**level) / 1000.0
    ds.ImagedVolumeWidth = w * mpp_mm
    ds.ImagedVolumeHeight = h * mpp_mm
    ds.ImagedVolumeDepth = 0.001
    measures = Dataset()
    measures.PixelSpacing = [f"{mpp_mm:.10g}", f"{mpp_mm:.10g}"]
    measures.SliceThickness = 0.001
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.SamplesPerPixel = 1 if spec.monochrome else 3
    if spec.monochrome:
        ds.PhotometricInterpretation = "MONOCHROME2"
    else:
        ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = (
            "YBR_FULL_422" if spec.syntax is TransferSyntax.jpeg_baseline else "RGB"
        )
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01" if spec.syntax is TransferSyntax.jpeg_baseline else "00"
    return ds


def _frame_positions(spec: DicomSeriesSpec, level: int) -> list[tuple[int, int]]:
    """(col, row) per frame. Sparse series store the frames shuffled, to prove positions work."""
    w, h = _level_dims(spec, level)
    cols, rows = -(-w // spec.tile), -(-h // spec.tile)
    grid = [(c, r) for r in range(rows) for c in range(cols)]
    if spec.sparse:
        order = np.random.default_rng(spec.seed + level).permutation(len(grid))
        grid = [grid[i] for i in order]
    return grid


def _write_instance(
    path: Path, spec: DicomSeriesSpec, level: int, tile_fn: TileFn, uids: dict[str, str]
) -> None:
    from pydicom import dcmwrite
    from pydicom.dataset import Dataset

    positions = _frame_positions(spec, level)
    n = len(positions)
    ds = _dataset(spec, level, uids, n)
    if spec.sparse:
        per_frame = []
        for col, row in positions:
            pos = Dataset()
            pos.ColumnPositionInTotalImagePixelMatrix = col * spec.tile + 1
            pos.RowPositionInTotalImagePixelMatrix = row * spec.tile + 1
            pos.XOffsetInSlideCoordinateSystem = 0.0
            pos.YOffsetInSlideCoordinateSystem = 0.0
            pos.ZOffsetInSlideCoordinateSystem = 0.0
            group = Dataset()
            group.PlanePositionSlideSequence = [pos]
            per_frame.append(group)
        ds.PerFrameFunctionalGroupsSequence = per_frame
    eot_pos = -1
    if spec.syntax.encapsulated and spec.extended_offset_table:
        # Placeholders, patched once the frame sizes are known (frames are streamed).
        ds.ExtendedOffsetTable = b"\0" * (8 * n)
        ds.ExtendedOffsetTableLengths = b"\0" * (8 * n)
    dcmwrite(path, ds, enforce_file_format=True)
    if spec.syntax.encapsulated and spec.extended_offset_table:
        eot_pos = _find_eot_value(path, n)
    with path.open("r+b") as fh:
        fh.seek(0, 2)
        if not spec.syntax.encapsulated:
            frame_bytes = spec.tile * spec.tile * (1 if spec.monochrome else 3)
            total = frame_bytes * n
            fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, total + (total & 1)))
            for col, row in positions:
                fh.write(_encode(_frame(tile_fn, spec, level, col, row), spec))
            if total & 1:
                fh.write(b"\0")
            return
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
        use_bot = spec.basic_offset_table and not spec.extended_offset_table
        fh.write(struct.pack("<HHI", 0xFFFE, 0xE000, 4 * n if use_bot else 0))
        bot_pos = fh.tell()
        if use_bot:
            fh.write(b"\0" * (4 * n))
        offsets: list[int] = []
        lengths: list[int] = []
        first = fh.tell()
        for col, row in positions:
            data = _encode(_frame(tile_fn, spec, level, col, row), spec)
            if len(data) & 1:
                data += b"\0"
            offsets.append(fh.tell() - first)
            lengths.append(len(data))
            fh.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(data)))
            fh.write(data)
        fh.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        if use_bot:
            fh.seek(bot_pos)
            fh.write(struct.pack(f"<{n}I", *offsets))
        if eot_pos >= 0:
            fh.seek(eot_pos)
            fh.write(struct.pack(f"<{n}Q", *offsets))
            fh.seek(eot_pos + 8 * n + 12)
            fh.write(struct.pack(f"<{n}Q", *lengths))


def _find_eot_value(path: Path, n: int) -> int:
    """File offset of the ExtendedOffsetTable value (7FE0,0001 OV, explicit VR LE)."""
    head = path.read_bytes()
    marker = struct.pack("<HH2sHI", 0x7FE0, 0x0001, b"OV", 0, 8 * n)
    pos = head.rfind(marker)
    if pos < 0:
        raise RuntimeError("ExtendedOffsetTable placeholder not found")
    return pos + len(marker)


def _write_label(
    path: Path, spec: DicomSeriesSpec, uids: dict[str, str], flavor: str = "LABEL"
) -> None:
    """A LABEL (or OVERVIEW) instance whose pixels stand for PHI (a label photo): the ingest
    service must never read them. SYNTHETIC, like the rest of the series."""
    from pydicom import dcmwrite

    label = DicomSeriesSpec(
        width=128, height=64, levels=1, tile=128, syntax=TransferSyntax.explicit_le, phi=spec.phi
    )
    ds = _dataset(label, 0, uids, 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", flavor, "NONE"]
    ds.Rows, ds.Columns = 128, 128
    ds.PixelData = np.full((128, 128, 3), 7, dtype=np.uint8).tobytes()
    dcmwrite(path, ds, enforce_file_format=True)


def write_dicom_series(
    out_dir: Path, spec: DicomSeriesSpec, tile_fn: TileFn | None = None
) -> list[Path]:
    """One instance file per level (instance-0000.dcm = level 0, ...), then the LABEL and
    OVERVIEW instances when asked for; returns their paths."""
    from pydicom.uid import generate_uid

    out_dir.mkdir(parents=True, exist_ok=True)
    fn = tile_fn or synthetic_tissue(spec.width, spec.height, spec.seed)
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    paths = []
    for level in range(spec.levels):
        path = out_dir / f"instance-{level:04d}.dcm"
        _write_instance(path, spec, level, fn, uids)
        paths.append(path)
    extras = [f for f, on in (("LABEL", spec.with_label), ("OVERVIEW", spec.with_overview)) if on]
    for flavor in extras:
        path = out_dir / f"instance-{len(paths):04d}.dcm"
        _write_label(path, spec, uids, flavor)
        paths.append(path)
    return paths


def write_non_wsi_dicom(path: Path) -> Path:
    """A tiny SYNTHETIC CT image: valid DICOM that is not VL Whole Slide Microscopy."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesDescription = "SYNTHETIC"
    ds.Rows = ds.Columns = 4
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_series_manifest(keys_and_sizes: Sequence[tuple[str, int]]) -> bytes:
    """Series manifest.json bytes (core.schemas.SeriesManifest; docs/architecture.md, S3 layout)."""
    manifest = SeriesManifest(instances=[SeriesInstance(key=k, size=s) for k, s in keys_and_sizes])
    return manifest.model_dump_json(by_alias=True).encode()
