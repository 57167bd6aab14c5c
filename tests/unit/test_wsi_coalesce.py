"""Range coalescing and the ranged-read file object."""

from __future__ import annotations

import io

import pytest

from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.ranged import BytesSource, RangedFile, Span, coalesce, read_ranges


def test_coalesce_merges_adjacent_and_close_ranges() -> None:
    spans = coalesce([(100, 10), (0, 10), (10, 10), (25, 5), (1000, 5)], gap=5, max_len=10_000)
    assert spans == [Span(0, 30), Span(100, 110), Span(1000, 1005)]


def test_coalesce_respects_max_len() -> None:
    spans = coalesce([(0, 40), (40, 40), (80, 40)], gap=0, max_len=100)
    assert spans == [Span(0, 80), Span(80, 120)]


def test_read_ranges_uses_few_gets_and_returns_exact_bytes() -> None:
    data = bytes(range(256)) * 40
    src = BytesSource(data)
    wanted = [(0, 100), (100, 50), (160, 10), (5000, 20)]
    got = read_ranges(src, wanted, gap=16, max_len=1 << 20)
    assert src.gets == 2
    for off, n in wanted:
        assert got[(off, n)] == data[off : off + n]


def test_ranged_file_behaves_like_bytesio() -> None:
    data = bytes(range(256)) * 1000
    f = RangedFile(BytesSource(data), block_size=4096, blocks=2)
    ref = io.BytesIO(data)
    for pos, n in [(0, 10), (4090, 20), (100_000, 9000), (len(data) - 5, 50)]:
        f.seek(pos)
        ref.seek(pos)
        assert f.read(n) == ref.read(n)
        assert f.tell() == ref.tell()
    f.seek(-3, io.SEEK_END)
    assert f.read() == data[-3:]


def test_read_past_end_is_truncated() -> None:
    with pytest.raises(SlideError) as info:
        BytesSource(b"abc").read_range(1, 10)
    assert info.value.code == "truncated"


def test_coalesce_bounds_the_bytes_fetched_for_nothing() -> None:
    # Two 1000-byte frames 500 bytes apart: merged without a waste bound, not with 10 %.
    ranges = [(0, 1000), (1500, 1000)]
    assert coalesce(ranges, gap=4096, max_len=1 << 20) == [Span(0, 2500)]
    assert coalesce(ranges, gap=4096, max_len=1 << 20, max_waste=0.1) == [
        Span(0, 1000),
        Span(1500, 2500),
    ]
    # Adjacent frames with 8-byte item headers between them still merge into one GET.
    dense = [(i * 1008 + 8, 1000) for i in range(50)]
    assert coalesce(dense, gap=4096, max_len=1 << 20, max_waste=0.1) == [Span(8, 50 * 1008)]
    # The waste accumulates over the span: many small gaps cannot add up past the bound.
    spaced = [(i * 1100, 1000) for i in range(20)]
    for span in coalesce(spaced, gap=4096, max_len=1 << 20, max_waste=0.1):
        inside = [(o, n) for o, n in spaced if span.start <= o < span.end]
        useful = sum(n for _, n in inside)
        assert (span.end - span.start) - useful <= 0.1 * useful
