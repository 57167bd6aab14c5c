"""Read-ahead holds at most its byte budget, whatever the slide's width (issue 15).

On a wide SYNTHETIC slide (a tile row spans many frames), the frames read ahead are counted
in bytes where the instance holds them, and the decode bursts in frames: read-ahead stages
compressed frames within ReadLimits.read_ahead_bytes and decodes nothing before the batch
that needs it. Counted, not RSS: deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from histoprompt.export.encoder_specs import encoder_spec
from histoprompt.wsi import tiling
from histoprompt.wsi.dicom import DicomInstance
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.read_ahead import ReadAhead
from histoprompt.wsi.sources import open_local

BATCH = 8
# A window of WINDOW tiles is about 230 KB of this slide's frames: the budget binds.
BUDGET = 96 * 1024
WINDOW = 4 * BATCH


@pytest.fixture(scope="module")
def wide_slide(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series

    out = tmp_path_factory.mktemp("wide")
    # 48 frames per frame row; each tile row (224 px at 0.5 mpp) spans two frame rows.
    return write_dicom_series(out, DicomSeriesSpec(width=12288, height=1024, levels=2, tile=256))


def _staged_bytes(inst: DicomInstance) -> int:
    with inst._frames_lock:
        return sum(len(b) for b in inst._staged.values())


def _read_all(files: list[Path], limits: ReadLimits, window: int) -> dict[str, Any]:
    opened = open_local(files, limits)
    try:
        plan = tiling.plan_tiles(opened.reader, encoder_spec("null"), min_tissue=0.25)
        inst = opened.reader.instance(plan.level)
        decoded: list[int] = []
        decode = inst._decode_into

        def counted(out: Any, indices: Any, data: Any) -> None:
            decoded.extend(indices)
            decode(out, indices, data)

        inst._decode_into = counted  # type: ignore[method-assign]
        ahead = ReadAhead(window)
        held, tiles = [], []
        ahead_of_batch = 0  # frames decoded while reading a batch that does not need them
        for s in range(0, plan.n_tiles, BATCH):
            stop = min(s + BATCH, plan.n_tiles)
            needs = {i for r in plan.regions(s, stop) for i in inst.frames_for(r)}
            decoded.clear()
            tiles.append(ahead.read(opened.reader, plan, s, stop))
            held.append(_staged_bytes(inst))
            ahead_of_batch += len(set(decoded) - needs)
        return {
            "held": held,
            "peak": ahead.peak_bytes,
            "ahead_of_batch": ahead_of_batch,
            "tiles": np.concatenate(tiles),
            "n_tiles": plan.n_tiles,
            "gets": opened.gets,
        }
    finally:
        opened.close()


def test_read_ahead_holds_at_most_its_byte_budget(wide_slide: list[Path]) -> None:
    got = _read_all(wide_slide, ReadLimits(read_ahead_bytes=BUDGET), window=WINDOW)
    assert got["n_tiles"] > 2 * WINDOW  # several windows' worth of tiles
    assert 0 < got["peak"] <= BUDGET
    assert max(got["held"]) <= BUDGET
    # Decoding stays batch by batch: what is read ahead is held compressed only.
    assert got["ahead_of_batch"] == 0


def test_budget_binds_and_results_match_batch_by_batch(wide_slide: list[Path]) -> None:
    small = _read_all(wide_slide, ReadLimits(read_ahead_bytes=BUDGET), window=WINDOW)
    large = _read_all(wide_slide, ReadLimits(read_ahead_bytes=1 << 30), window=WINDOW)
    # With no budget to speak of, a window stages more than BUDGET: the budget is what bounds.
    assert large["peak"] > BUDGET
    assert small["gets"] > large["gets"]
    np.testing.assert_array_equal(small["tiles"], large["tiles"])
    opened = open_local(wide_slide, ReadLimits())
    try:
        plan = tiling.plan_tiles(opened.reader, encoder_spec("null"), min_tissue=0.25)
        ref = np.concatenate(
            [
                tiling.read_tiles(opened.reader, plan, s, min(s + BATCH, plan.n_tiles))
                for s in range(0, plan.n_tiles, BATCH)
            ]
        )
    finally:
        opened.close()
    np.testing.assert_array_equal(small["tiles"], ref)
