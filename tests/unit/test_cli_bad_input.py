"""The CLI's bad-input table and exit codes, as README.md documents them.

The README is the single source: every row of its bad-input table is run here as written
(leading `VAR=value` words become the environment), and must print exactly one `error:` line
on stderr and exit with the row's code; its exit-code table must name the project errors
that `histoprompt.client.errors` maps to each code. The files the commands name are made
here (SYNTHETIC); S3 is in memory (test_cli_commands' FakeS3) except in rows that give an
endpoint of their own.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cli_commands import FakeS3, s3  # noqa: F401 - s3 is a fixture used by name
from typer.testing import CliRunner

from histoprompt.client import errors as client_errors
from histoprompt.client.cli import app
from histoprompt.core import errors as core_errors

README = Path(__file__).resolve().parents[2] / "README.md"
runner = CliRunner()


def _table_after(marker: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after `marker`."""
    text = README.read_text(encoding="utf-8")
    assert marker in text, f"README.md has no {marker!r}"
    rows = []
    for line in text[text.index(marker) :].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # header and separator


BAD_INPUT = _table_after("**Bad input.**")
EXIT_CODES = _table_after("Exit codes, and the project errors")


def _files(tmp: Path) -> None:
    (tmp / "notes.txt").write_text("not a slide, SYNTHETIC\n")
    (tmp / "cut.svs").write_bytes(b"II*\x00\x08\x00\x00\x00" + b"\x00" * 10)  # truncated TIFF
    (tmp / "empty_dir").mkdir()
    locked = tmp / "locked.svs"
    locked.write_bytes(b"II*\x00")
    locked.chmod(0)
    (tmp / "bad.gmt").write_text("A_SET\n")
    (tmp / "typo.toml").write_text('s3_endpiont = "typo"\n')


SETUP_NOTES: dict[str, Callable[[], str | None]] = {
    # root reads any file whatever its mode: the row cannot be exercised as root.
    "unreadable file": lambda: "root reads a mode-000 file" if os.geteuid() == 0 else None,
}


def test_the_table_has_every_documented_kind() -> None:
    cases = {row[0] for row in BAD_INPUT}
    assert {
        "missing file",
        "unreadable file",
        "not a slide",
        "bad GMT file",
        "unknown gene-set name",
        "unknown slide id",
        "S3 endpoint that is not host:port",
        "unknown settings variable",
    } <= cases
    assert all(re.fullmatch(r"`[^`]+`", row[1]) and row[2].isdigit() for row in BAD_INPUT)


@pytest.mark.parametrize(("case", "command", "code"), BAD_INPUT, ids=[r[0] for r in BAD_INPUT])
def test_each_bad_input_is_one_error_line_and_its_exit_code(
    case: str,
    command: str,
    code: str,
    s3: FakeS3,  # noqa: F811 - the fixture (also clears HISTOPROMPT_* and chdirs to tmp)
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    note = SETUP_NOTES.get(case, lambda: None)()
    if note:
        pytest.skip(note)
    _files(tmp_path)
    words = shlex.split(command.strip("`"))
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        monkeypatch.setenv(name, value)
    assert words.pop(0) == "histoprompt"
    if "--s3-endpoint" in words:
        monkeypatch.undo()  # the row's own endpoint, not the in-memory S3
        monkeypatch.chdir(tmp_path)
        for key in [k for k in os.environ if k.startswith("HISTOPROMPT_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("HISTOPROMPT_CONNECT_TIMEOUT", "2")
    res = runner.invoke(app, words)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == int(code), res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output


def _error_class(name: str) -> type[core_errors.HistopromptError]:
    for module in (core_errors, client_errors):
        if hasattr(module, name):
            cls: type[core_errors.HistopromptError] = getattr(module, name)
            return cls
    raise AssertionError(f"README names an unknown error class {name}")


def test_the_exit_code_table_matches_the_code() -> None:
    codes = {int(row[0]): row for row in EXIT_CODES}
    assert sorted(codes) == [
        client_errors.EXIT_OK,
        client_errors.EXIT_USAGE,
        client_errors.EXIT_NOT_FOUND,
        client_errors.EXIT_UNAVAILABLE,
        client_errors.EXIT_INVALID,
    ]
    listed = set()
    for code, (_, _, classes) in codes.items():
        for name in re.findall(r"`(\w+)`", classes):
            cls = _error_class(name)
            assert client_errors.exit_code_for(cls("x")) == code, name
            listed.add(cls)
    mapped = {kind for kind, _ in client_errors._EXIT_CODES}
    assert mapped <= listed, f"README's exit-code table misses {mapped - listed}"
    assert client_errors.exit_code_for(core_errors.HistopromptError("x")) == 1
