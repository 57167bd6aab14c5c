"""How a histoprompt-export command ends on a failure it expects: `error: <message>` in red
on stderr and exit status 2, with no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from histoprompt.core.errors import HistopromptError


def fail(message: str) -> typer.Exit:
    """Print `message` as the command's error; the caller raises what this returns."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


@contextmanager
def exit_on_error(*errors: type[Exception]) -> Iterator[None]:
    """One of `errors` (default: any HistopromptError) ends the command through `fail`."""
    caught = errors or (HistopromptError,)
    try:
        yield
    except caught as err:
        raise fail(str(err)) from err
