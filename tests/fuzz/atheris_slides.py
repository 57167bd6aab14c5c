"""Coverage-guided fuzzing of the slide readers with atheris (libFuzzer), for `make fuzz`.

The corpus starts from the SYNTHETIC seeds of tests/helpers/slide_mutations; each input runs
the same reads as the seeded-mutation cases (tests/helpers/slide_fuzz.exercise). A project
error (HistopromptError) is an accepted outcome; any other exception is a crash, which
libFuzzer reports with the input saved as `crash-<sha1>` in the working directory.
libFuzzer's own options bound each input: `-timeout` (seconds per input) and
`-rss_limit_mb` / `-malloc_limit_mb` (memory), and `-max_total_time` the run.

    uv run --frozen --with atheris python tests/fuzz/atheris_slides.py CORPUS_DIR \
        -max_total_time=600 -timeout=10 -rss_limit_mb=2048

`make fuzz` runs it after the seeded cases, with the corpus kept in .cache/fuzz/corpus;
atheris is not a locked dependency (it builds only where libFuzzer wheels exist), so where
it does not install the target says so and the seeded run stands alone.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The readers and the parsers under them, imported here so that they are instrumented
# (exercise() imports them lazily, which would be too late).
with atheris.instrument_imports(include=["pydicom", "tifffile", "tiffslide", "histoprompt"]):
    import pydicom.filereader  # noqa: F401
    import tifffile  # noqa: F401
    import tiffslide  # noqa: F401

    import histoprompt.wsi.dicom  # noqa: F401
    import histoprompt.wsi.instance_header  # noqa: F401
    import histoprompt.wsi.sources  # noqa: F401
    import histoprompt.wsi.tiff  # noqa: F401
    from histoprompt.core.errors import HistopromptError

from helpers.slide_fuzz import exercise  # noqa: E402 - after the instrumented imports


def one_input(data: bytes) -> None:
    # The readers' own refusal is what the contract allows; anything else crashes the run.
    with contextlib.suppress(HistopromptError):
        exercise(data)


def _seed_corpus(argv: list[str]) -> list[str]:
    """The corpus directory (the first non-option argument, else a new temporary one),
    seeded with the SYNTHETIC slides when it is empty."""
    from helpers.slide_mutations import make_seeds

    dirs = [a for a in argv[1:] if not a.startswith("-")]
    corpus = Path(dirs[0]) if dirs else Path(tempfile.mkdtemp(prefix="histoprompt-corpus-"))
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        with tempfile.TemporaryDirectory() as scratch:
            for seed in make_seeds(Path(scratch)):
                (corpus / seed.name).write_bytes(seed.data)
    print(f"corpus: {corpus}", file=sys.stderr)
    return argv if dirs else [argv[0], str(corpus), *argv[1:]]


def main() -> None:
    warnings.simplefilter("ignore")
    warnings.simplefilter("error", RuntimeWarning)
    logging.disable(logging.CRITICAL)
    atheris.Setup(_seed_corpus(sys.argv), one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
