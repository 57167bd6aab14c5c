"""Mutated and truncated DICOM-WSI and TIFF bytes through the slide readers (issue 17).

The seeds are SYNTHETIC files from the project's generators; tests/helpers/slide_mutations
mutates them (bit flips, interesting values, truncation, chunk duplication and deletion,
DICOM element and TIFF IFD entry mutation) and tests/helpers/slide_fuzz runs each case in a
watched worker: a per-case timeout, a memory cap, a restart after a crash.

`make test` runs CI_CASES cases of a fixed run seed (about 15 s on two cores); `make fuzz`
runs FUZZ_CASES (default 100,000) of the seed FUZZ_SEED. A finding prints its case number:
`mutate_case(seeds, run_seed, n)` gives back the bytes.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from pathlib import Path

import pytest
from helpers.slide_fuzz import exercise, run_cases, worker_count
from helpers.slide_mutations import Seed, make_seeds, mutate_case, tiff_ifds

from histoprompt.wsi.errors import SlideError

CI_CASES = 3000
CI_SEED = 17


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    return make_seeds(tmp_path_factory.mktemp("fuzz-seeds"))


def test_every_seed_reads_cleanly(seeds: list[Seed]) -> None:
    """Unmutated, each seed opens and its tiles read: the cases start from valid slides."""
    assert {s.kind for s in seeds} == {"dicom", "tiff"}
    for seed in seeds:
        exercise(seed.data)


def test_cases_are_reproducible_from_their_number(seeds: list[Seed]) -> None:
    a = [mutate_case(seeds, CI_SEED, i)[1] for i in range(50)]
    b = [mutate_case(seeds, CI_SEED, i)[1] for i in range(50)]
    assert a == b
    originals = [seeds[i % len(seeds)].data for i in range(50)]
    assert sum(x != o for x, o in zip(a, originals, strict=True)) >= 45


def _report(seeds: list[Seed], run_seed: int, cases: int) -> None:
    t0 = time.monotonic()
    report = run_cases(seeds, run_seed, range(cases), workers=worker_count())
    print(
        f"\n{report.cases} mutated slides (run seed {run_seed}) in {time.monotonic() - t0:.1f} s:",
        dict(sorted(report.outcomes.items())),
    )
    assert report.cases == cases
    assert not report.findings, "\n".join(report.findings[:20])
    # The cases reach past the header: some still read, and the readers refuse the rest
    # for several distinct reasons.
    assert report.outcomes["ok"] > 0
    assert len([k for k in report.outcomes if k.startswith("error:")]) >= 5


def test_mutated_slides_raise_only_project_errors(seeds: list[Seed]) -> None:
    _report(seeds, CI_SEED, CI_CASES)


@pytest.mark.fuzz
@pytest.mark.skipif(not os.environ.get("FUZZ_CASES"), reason="opt-in: make fuzz")
def test_long_fuzz_run(seeds: list[Seed]) -> None:
    _report(seeds, int(os.environ.get("FUZZ_SEED", "1")), int(os.environ["FUZZ_CASES"]))


@pytest.mark.timeout(60)
def test_a_looping_ifd_chain_is_refused_not_walked_forever(seeds: list[Seed]) -> None:
    """Found by atheris: a TIFF whose IFD names itself as the next one made tifffile list
    pages forever; the readers now refuse it (corrupt_tiff) before tifffile sees it."""
    tiff = next(s for s in seeds if s.kind == "tiff")
    for ifd, next_pointer in tiff_ifds(tiff.data):
        looped = bytearray(tiff.data)
        looped[next_pointer : next_pointer + 4] = struct.pack("<I", ifd)
        with pytest.raises(SlideError) as info:
            exercise(bytes(looped))
        assert info.value.code == "corrupt_tiff"


# The harness itself: a hang, a memory blow-up and a dead worker are each reported.


def _hang(data: bytes) -> None:
    time.sleep(60)


def _allocate(data: bytes) -> None:
    bytearray(4 << 30)


def _segfault(data: bytes) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _unexpected(data: bytes) -> None:
    raise KeyError("not a project error")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (_hang, "hang"),
        (_allocate, "memory"),
        (_segfault, "worker died"),
        (_unexpected, "KeyError"),
    ],
    ids=["hang", "memory", "crash", "foreign-error"],
)
def test_the_harness_reports_each_kind_of_finding(
    seeds: list[Seed], target: object, expected: str
) -> None:
    report = run_cases(
        seeds, CI_SEED, range(2), workers=1, case_timeout=0.5, mem_cap_mb=256, target=target
    )  # type: ignore[arg-type]
    assert report.cases == 2
    assert len(report.findings) == 2 and all(expected in f for f in report.findings)


def test_seed_files_say_synthetic(tmp_path: Path, seeds: list[Seed]) -> None:
    assert all(b"SYNTHETIC" in s.data for s in seeds)
