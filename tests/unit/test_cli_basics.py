"""The CLI's plumbing: help and examples, exit codes, settings precedence, output modes,
slide validation, and that --help imports nothing heavy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from histoprompt.client.cli import app
from histoprompt.client.errors import (
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    NotASlideError,
    exit_code_for,
    translate,
)
from histoprompt.client.output import Output
from histoprompt.client.settings import load_settings
from histoprompt.client.slides import inspect_slide
from histoprompt.core.errors import (
    ConfigError,
    HistopromptError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from histoprompt.core.genesets import UnknownGeneSetError

# No stack.env, config or HISTOPROMPT_* from the developer's shell leaks in.
pytestmark = pytest.mark.usefixtures("clean_histoprompt_env")

runner = CliRunner()

COMMANDS = [
    [],
    ["submit"],
    ["watch"],
    ["results"],
    ["query"],
    ["predict"],
    ["heatmap"],
    ["status"],
    ["gene-sets"],
    ["gene-sets", "list"],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "replay"],
    ["gene-sets", "show"],
]


def help_examples() -> list[str]:
    """Every `Example: histoprompt ...` line in every command's --help."""
    found = []
    for cmd in COMMANDS:
        result = runner.invoke(app, [*cmd, "--help"])
        found += re.findall(r"Example: (histoprompt .+)", result.output)
    return found


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help_with_an_example(cmd: list[str]) -> None:
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert re.search(r"Example: histoprompt \S+", result.output), result.output


def test_the_documented_examples_are_the_ones_tested() -> None:
    """test_cli_commands.py runs each of these; a new example must get a test there."""
    from test_cli_commands import TESTED_EXAMPLES
    from test_cli_dlq import DLQ_EXAMPLES

    assert sorted(help_examples()) == sorted(TESTED_EXAMPLES + DLQ_EXAMPLES)


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from histoprompt.client.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = ['numpy', 'pandas', 'minio', 'kafka', 'tritonclient', 'pydicom', 'PIL',\n"
        "         'tifffile', 'histoprompt.stack.launcher', 'histoprompt.core.results']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"--help imported: {out.stdout.strip()}"


def test_usage_errors_exit_1_not_clicks_2() -> None:
    assert runner.invoke(app, ["no-such-command"]).exit_code == EXIT_USAGE
    assert runner.invoke(app, ["results"]).exit_code == EXIT_USAGE  # missing SLIDE_ID
    assert runner.invoke(app, ["results", "x", "--format", "xml"]).exit_code == EXIT_USAGE
    assert runner.invoke(app, ["--no-such-flag"]).exit_code == EXIT_USAGE
    res = runner.invoke(app, ["results", "0123456789abcdef", "--format", "parquet"])
    assert res.exit_code == EXIT_USAGE and "--out" in res.output


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (NotFoundError("x"), EXIT_NOT_FOUND),
        (UnknownGeneSetError("X", [], "h"), EXIT_NOT_FOUND),
        (ServiceUnavailableError("x"), EXIT_UNAVAILABLE),
        (InvalidInputError("x"), EXIT_INVALID),
        (NotASlideError("x"), EXIT_INVALID),
        (PermissionDeniedError("x"), EXIT_INVALID),
        (ConfigError("x"), EXIT_INVALID),
        (HistopromptError("x"), EXIT_USAGE),
    ],
)
def test_exit_code_map(err: HistopromptError, code: int) -> None:
    assert exit_code_for(err) == code


def test_translate_foreign_errors() -> None:
    refused = ConnectionRefusedError(111, "refused")
    assert isinstance(translate(refused), ServiceUnavailableError)
    from urllib3.exceptions import MaxRetryError

    assert isinstance(translate(MaxRetryError(None, "/")), ServiceUnavailableError)  # type: ignore[arg-type]
    assert translate(ValueError("bug")) is None


def test_errors_are_one_line_and_debug_adds_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a slide")
    res = runner.invoke(app, ["submit", str(bad)])
    assert res.exit_code == EXIT_INVALID
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not a slide" in lines[0]
    res = runner.invoke(app, ["--debug", "submit", str(bad)])
    assert res.exit_code == EXIT_INVALID and "Traceback" in res.stderr


def test_settings_precedence_flags_env_config_envfile_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "stack.env"
    env_file.write_text(
        "HISTOPROMPT_S3_ENDPOINT=envfile:1\nHISTOPROMPT_TRITON_URL=envfile:2\n"
        "HISTOPROMPT_KAFKA_BOOTSTRAP=envfile:3\nHISTOPROMPT_PROMETHEUS_URL=http://envfile:4\n"
    )
    config = tmp_path / "cli.toml"
    config.write_text(
        '[histoprompt]\ns3_endpoint = "toml:1"\ntriton_url = "toml:2"\n'
        'kafka_bootstrap = "toml:3"\npublish_events = false\n'
    )
    monkeypatch.setenv("HISTOPROMPT_TRITON_URL", "env:2")
    monkeypatch.setenv("HISTOPROMPT_S3_ENDPOINT", "env:1")
    s = load_settings(config, env_file, s3_endpoint="flag:1", kafka_bootstrap=None)
    assert s.s3_endpoint == "flag:1"  # flag > env
    assert s.triton_url == "env:2"  # env > config
    assert s.kafka_bootstrap == "toml:3"  # config > env file
    assert s.prometheus_url == "http://envfile:4"  # env file > default
    assert s.publish_events is False
    assert s.results_bucket == "histoprompt-results"  # default
    monkeypatch.setenv("HISTOPROMPT_CONFIG", str(config))
    assert load_settings(env_file=env_file).kafka_bootstrap == "toml:3"


def test_bad_config_is_invalid_input(tmp_path: Path) -> None:
    config = tmp_path / "cli.toml"
    config.write_text('s3_endpiont = "typo"\n')
    with pytest.raises(ConfigError, match="unknown settings"):
        load_settings(config)
    res = runner.invoke(app, ["--config", str(config), "gene-sets", "list"])
    assert res.exit_code == EXIT_INVALID and "s3_endpiont" in res.stderr
    res = runner.invoke(app, ["--config", str(tmp_path / "missing.toml"), "gene-sets", "list"])
    assert res.exit_code == EXIT_INVALID


def test_output_modes(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"gene_set": "A", "score": 0.5}, {"gene_set": "B", "score": -1.25}]
    Output.detect(json_mode=True).table(rows, ["gene_set", "score"])
    assert json.loads(capsys.readouterr().out) == rows
    Output.detect().table(rows, ["gene_set", "score"])  # captured stdout is not a TTY
    assert capsys.readouterr().out.splitlines() == ["gene_set\tscore", "A\t0.5000", "B\t-1.2500"]

    class Tty:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> int:
            self.text += s
            return len(s)

        def flush(self) -> None:
            return None

    tty = Tty()
    out = Output.detect(stream=tty)  # type: ignore[arg-type]
    assert out.rich
    out.table(rows, ["gene_set", "score"], title="t")
    assert "┃" in tty.text or "│" in tty.text  # a rich box-drawn table
    assert "-1.2500" in tty.text


def test_gene_sets_list_show_and_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = runner.invoke(app, ["gene-sets", "list"])
    assert res.exit_code == 0
    assert len(res.stdout.strip().splitlines()) == 51  # header + 50 Hallmarks
    res = runner.invoke(app, ["gene-sets", "show", "e2f_targets", "--json"])
    body = json.loads(res.stdout)
    assert body["name"] == "HALLMARK_E2F_TARGETS" and len(body["genes"]) == 200
    res = runner.invoke(app, ["gene-sets", "show", "NOT_A_PATHWAY"])
    assert res.exit_code == EXIT_NOT_FOUND and "unknown gene set" in res.stderr
    gmt = tmp_path / "mine.gmt"
    gmt.write_text("MY_TCELL\tuser set\tCD3E\tCD8A\tGZMB\tPRF1\tIFNG\n")
    monkeypatch.setenv("HISTOPROMPT_GENE_SETS_GMT", str(gmt))
    res = runner.invoke(app, ["--json", "gene-sets", "list", "--contains", "tcell"])
    assert [r["name"] for r in json.loads(res.stdout)] == ["MY_TCELL"]


def _tiff(path: Path, shape: tuple[int, int] = (300, 500)) -> Path:
    import tifffile

    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 255, (*shape, 3), dtype=np.uint8), photometric="rgb")
    return path


def test_slide_validation(tmp_path: Path) -> None:
    from histoprompt.export.synthetic_wsi import (
        DicomSeriesSpec,
        TransferSyntax,
        write_dicom_series,
    )

    assert inspect_slide(_tiff(tmp_path / "a.svs")).kind == "tiff"
    series = tmp_path / "series"
    files = write_dicom_series(
        series, DicomSeriesSpec(512, 256, levels=2, syntax=TransferSyntax.explicit_le)
    )
    found = inspect_slide(series)
    assert found.kind == "dicom-series" and found.files == tuple(files)
    assert inspect_slide(files[0]).kind == "dicom"
    fake_tiff = tmp_path / "fake.tiff"
    fake_tiff.write_bytes(b"II*\x00garbage")
    with pytest.raises(NotASlideError, match="unreadable TIFF"):
        inspect_slide(fake_tiff)
    with pytest.raises(NotASlideError, match="no .dcm"):
        inspect_slide(tmp_path / "series" / ".." / "..")
    with pytest.raises(NotASlideError, match="no such file"):
        inspect_slide(tmp_path / "missing.svs")


def test_non_wsi_dicom_is_rejected(tmp_path: Path) -> None:
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(NotASlideError, match="not VL Whole Slide Microscopy"):
        inspect_slide(path)
    res = runner.invoke(app, ["submit", str(path)])
    assert res.exit_code == EXIT_INVALID


def test_stack_is_mounted_lazily() -> None:
    res = runner.invoke(app, ["stack", "--help"])
    assert res.exit_code == 0
    for sub in ("up", "down", "status"):
        assert sub in res.output


def _complete(words: str, cword: int) -> list[str]:
    import os

    env = {**os.environ, "_HISTOPROMPT_COMPLETE": "complete_bash", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(cword)
    code = "from histoprompt.client.cli import app; app(prog_name='histoprompt')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return out.stdout.split()


def test_shell_completion_of_commands_and_gene_sets() -> None:
    assert _complete("histoprompt res", 1) == ["results"]
    assert _complete("histoprompt gene-sets sh", 2) == ["show"]
    assert _complete("histoprompt gene-sets show E2", 3) == ["E2F_TARGETS"]
    assert _complete("histoprompt query x -g HALLMARK_HYP", 4) == ["HALLMARK_HYPOXIA"]
    res = runner.invoke(app, ["--show-completion", "bash"])
    assert res.exit_code == 0 and "_HISTOPROMPT_COMPLETE" in res.output
