"""Seeded mutation of SYNTHETIC slide files for the reader fuzz tests.

Seeds come from the project's own generators (histoprompt.export.synthetic_wsi and
synthetic_tiff: every file says SYNTHETIC). Case `i` of a run is a pure function of
(run seed, i), so a finding is replayed from its number alone (`mutate_case`).

Mutations: bit flips, bytes replaced by interesting values (0, 0xFF, 0x7FFFFFFF, huge
lengths), truncation, chunk duplication and deletion, and structure-aware ones: the value
or length of a DICOM header element, the type, count or value of a TIFF IFD entry, and a
TIFF next-IFD pointer (looping back, 0, past the end).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

INTERESTING_32 = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
INTERESTING_16 = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF)
# Decimal strings for IS/DS elements (Rows are US, but NumberOfFrames and the total matrix
# sizes of older writers are strings).
INTERESTING_TEXT = (b"0 ", b"-1", b"99999999", b"2147483648", b"1e308", b"nan ", b"  ", b"\x00\x00")

# (group, element) of DICOM header elements that steer the readers.
DICOM_TAGS = (
    (0x0002, 0x0010),  # TransferSyntaxUID
    (0x0008, 0x0008),  # ImageType
    (0x0008, 0x0016),  # SOPClassUID
    (0x0020, 0x9311),  # DimensionOrganizationType
    (0x0028, 0x0002),  # SamplesPerPixel
    (0x0028, 0x0004),  # PhotometricInterpretation
    (0x0028, 0x0008),  # NumberOfFrames
    (0x0028, 0x0010),  # Rows
    (0x0028, 0x0011),  # Columns
    (0x0028, 0x0100),  # BitsAllocated
    (0x0048, 0x0006),  # TotalPixelMatrixColumns
    (0x0048, 0x0007),  # TotalPixelMatrixRows
    (0x0048, 0x0001),  # ImagedVolumeWidth
    (0x0028, 0x0030),  # PixelSpacing
    (0x0020, 0x9113),  # PlanePositionSlideSequence
    (0x0048, 0x021E),  # ColumnPositionInTotalImagePixelMatrix
    (0x7FE0, 0x0001),  # ExtendedOffsetTable
    (0x7FE0, 0x0010),  # PixelData
    (0xFFFE, 0xE000),  # Item (offset table, fragments)
)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}


@dataclass(frozen=True)
class Seed:
    """One SYNTHETIC slide file to mutate: `kind` is 'dicom' or 'tiff'."""

    name: str
    kind: str
    data: bytes


def make_seeds(out_dir: Path) -> list[Seed]:
    """Small SYNTHETIC DICOM-WSI instances (every supported codec family, TILED_FULL and
    TILED_SPARSE, offset tables of each kind) and pyramidal TIFFs (JPEG, deflate, raw)."""
    from histoprompt.export.synthetic_tiff import write_tiff
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, TransferSyntax, write_dicom_series

    ts = TransferSyntax
    dicom_specs = {
        "dcm-raw": {"syntax": ts.explicit_le},
        "dcm-jpeg": {"syntax": ts.jpeg_baseline},
        "dcm-jpeg-sparse": {"syntax": ts.jpeg_baseline, "sparse": True},
        "dcm-j2k-eot": {"syntax": ts.jpeg2000, "extended_offset_table": True},
        "dcm-jls-nobot": {"syntax": ts.jpegls, "basic_offset_table": False, "monochrome": True},
    }
    seeds = []
    for name, kw in dicom_specs.items():
        spec = DicomSeriesSpec(width=80, height=48, levels=1, tile=32, **kw)  # type: ignore[arg-type]
        (path,) = write_dicom_series(out_dir / name, spec)
        seeds.append(Seed(name, "dicom", path.read_bytes()))
    for comp in ("jpeg", "zlib", "none"):
        path = write_tiff(
            out_dir / f"tiff-{comp}.tiff", 96, 64, levels=2, tile=32, compression=comp
        )
        seeds.append(Seed(f"tiff-{comp}", "tiff", path.read_bytes()))
    return seeds


def _dicom_tag_offsets(data: bytes) -> list[int]:
    head = data[: min(len(data), 4096)]
    out = []
    for group, elem in DICOM_TAGS:
        needle = struct.pack("<HH", group, elem)
        at = head.find(needle)
        while at >= 0:
            out.append(at)
            at = head.find(needle, at + 1)
    return out


def _mutate_dicom_element(buf: bytearray, rng: random.Random) -> None:
    offsets = _dicom_tag_offsets(bytes(buf))
    if not offsets:
        return _bit_flip(buf, rng)
    at = rng.choice(offsets)
    vr = bytes(buf[at + 4 : at + 6])
    long_form = vr in _LONG_VRS
    value_at = at + (12 if long_form else 8)
    choice = rng.randrange(4)
    if choice == 0:  # the length field
        if long_form:
            _put(buf, at + 8, struct.pack("<I", rng.choice(INTERESTING_32)))
        else:
            _put(buf, at + 6, struct.pack("<H", rng.choice(INTERESTING_16)))
    elif choice == 1:
        _put(buf, value_at, struct.pack("<H", rng.choice(INTERESTING_16)))
    elif choice == 2:
        _put(buf, value_at, struct.pack("<I", rng.choice(INTERESTING_32)))
    else:
        _put(buf, value_at, rng.choice(INTERESTING_TEXT))
    return None


def tiff_ifds(data: bytes) -> list[tuple[int, int]]:
    """(IFD offset, offset of its next-IFD pointer) along the main chain of a classic
    little-endian TIFF."""
    if data[:4] != b"II*\0" or len(data) < 8:
        return []
    out: list[tuple[int, int]] = []
    ifd = struct.unpack_from("<I", data, 4)[0]
    while 0 < ifd < len(data) - 2 and ifd not in {o for o, _ in out} and len(out) < 16:
        n = struct.unpack_from("<H", data, ifd)[0]
        if ifd + 2 + 12 * n + 4 > len(data):
            break
        out.append((ifd, ifd + 2 + 12 * n))
        ifd = struct.unpack_from("<I", data, ifd + 2 + 12 * n)[0]
    return out


def _tiff_entries(data: bytes) -> list[int]:
    """Byte offsets of the 12-byte entries of every IFD of a classic little-endian TIFF."""
    return [e for ifd, nxt in tiff_ifds(data) for e in range(ifd + 2, nxt, 12)]


def _mutate_tiff_next_ifd(buf: bytearray, rng: random.Random) -> None:
    """A next-IFD pointer aimed at its own IFD, an earlier one, 0, or past the end (a
    looping chain made tifffile list pages forever; see histoprompt.wsi.tiff_ifds)."""
    ifds = tiff_ifds(bytes(buf))
    if not ifds:
        return _bit_flip(buf, rng)
    i = rng.randrange(len(ifds))
    target = rng.choice([ifds[i][0], ifds[rng.randrange(i + 1)][0], 0, len(buf) + 8, 0xFFFFFFFF])
    _put(buf, ifds[i][1], struct.pack("<I", target))
    return None


def _mutate_tiff_entry(buf: bytearray, rng: random.Random) -> None:
    entries = _tiff_entries(bytes(buf))
    if not entries:
        return _bit_flip(buf, rng)
    at = rng.choice(entries)
    field = rng.randrange(4)
    if field == 0:  # the tag number: an entry becomes another tag
        _put(
            buf,
            at,
            struct.pack(
                "<H",
                rng.choice((256, 257, 258, 259, 273, 277, 279, 322, 323, 324, 325, 330, 0xFFFF)),
            ),
        )
    elif field == 1:  # the field type (0 and 13+ are invalid)
        _put(buf, at + 2, struct.pack("<H", rng.choice((0, 1, 2, 3, 4, 5, 12, 13, 16, 0xFFFF))))
    elif field == 2:  # the count
        _put(buf, at + 4, struct.pack("<I", rng.choice(INTERESTING_32)))
    else:  # the value or its offset
        _put(buf, at + 8, struct.pack("<I", rng.choice(INTERESTING_32)))
    return None


def _put(buf: bytearray, at: int, value: bytes) -> None:
    if 0 <= at < len(buf):
        buf[at : at + len(value)] = value[: max(0, len(buf) - at)]


def _bit_flip(buf: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)


def _interesting(buf: bytearray, rng: random.Random) -> None:
    at = _header_biased_offset(buf, rng)
    if rng.random() < 0.5:
        buf[at] = rng.choice((0, 0xFF, 0x7F, 0x80))
    else:
        _put(buf, at, struct.pack("<I", rng.choice(INTERESTING_32)))


def _truncate(buf: bytearray, rng: random.Random) -> None:
    cut = rng.randrange(len(buf)) if rng.random() < 0.5 else _header_biased_offset(buf, rng)
    del buf[cut:]


def _duplicate_chunk(buf: bytearray, rng: random.Random) -> None:
    start = _header_biased_offset(buf, rng)
    chunk = bytes(buf[start : start + rng.randint(1, 512)])
    at = rng.randrange(len(buf))
    buf[at:at] = chunk


def _delete_chunk(buf: bytearray, rng: random.Random) -> None:
    start = _header_biased_offset(buf, rng)
    del buf[start : start + rng.randint(1, 512)]


def _header_biased_offset(buf: bytearray, rng: random.Random) -> int:
    # Headers steer the readers; pixel bytes mostly reach the codecs, so 3 of 4 hits land
    # in the first 2 KiB.
    span = len(buf) if rng.random() < 0.25 else min(len(buf), 2048)
    return rng.randrange(max(span, 1))


Mutator = Callable[[bytearray, random.Random], None]
GENERIC: tuple[Mutator, ...] = (_bit_flip, _interesting, _truncate, _duplicate_chunk, _delete_chunk)


def mutate(seed: Seed, rng: random.Random) -> bytes:
    """1-3 mutations of `seed`, a structure-aware one in about half of the cases."""
    buf = bytearray(seed.data)
    structured: Mutator = _mutate_dicom_element
    if seed.kind == "tiff":
        structured = _mutate_tiff_next_ifd if rng.random() < 0.15 else _mutate_tiff_entry
    for _ in range(rng.randint(1, 3)):
        if not buf:
            break
        op = structured if rng.random() < 0.5 else rng.choice(GENERIC)
        op(buf, rng)
    return bytes(buf)


def mutate_case(seeds: list[Seed], run_seed: int, index: int) -> tuple[Seed, bytes]:
    """Case `index` of the run `run_seed`: which seed, and its mutated bytes."""
    rng = random.Random(run_seed * 1_000_003 + index)
    seed = seeds[index % len(seeds)]
    return seed, mutate(seed, rng)
