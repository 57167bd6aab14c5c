"""The root command group: maps every error to one line and an exit code, in one place."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import typer
from typer import _click  # Typer >= 0.16 vendors click; UsageError lives here
from typer.core import TyperGroup

from histoprompt.client.errors import EXIT_USAGE, ClientError, exit_code_for, translate

__all__ = ["LazyStackGroup", "RootGroup"]

STACK_HELP = "Local stack (Kafka, S3, Triton, Prometheus): up, down, status."


def _fail(ctx: _click.Context, exc: BaseException) -> typer.Exit:
    """Print `exc` as one line (or a traceback with --debug) and build the Exit to raise."""
    err = translate(exc)
    debug = bool(getattr(ctx.find_root().obj, "debug", False))
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if err is None:
        sys.stderr.write(
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)\n"
        )
        return typer.Exit(EXIT_USAGE)
    sys.stderr.write(f"error: {err.message}\n")
    return typer.Exit(exit_code_for(err))


class RootGroup(TyperGroup):
    """`histoprompt`: usage errors exit 1 (click's default is 2, which means not-found here)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.add_command(LazyStackGroup(name="stack", help=STACK_HELP, no_args_is_help=True))

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: _click.Context | None = None,
        **extra: Any,
    ) -> _click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _click.exceptions.UsageError as err:
            err.exit_code = EXIT_USAGE
            raise

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _click.exceptions.UsageError as err:
            err.exit_code = EXIT_USAGE
            raise
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # `histoprompt results X | head`: the reader left; nothing more to say.
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            raise typer.Exit(130) from None
        except Exception as exc:
            raise _fail(ctx, exc) from exc


class LazyStackGroup(TyperGroup):
    """Mounts `histoprompt.stack.cli:app` (package histoprompt-stack) only when used."""

    _real: TyperGroup | None = None

    def _load(self) -> TyperGroup:
        if self._real is None:
            try:
                from histoprompt.stack.cli import app as stack_app
            except ImportError as err:
                raise ClientError(
                    "`histoprompt stack` needs the histoprompt-stack package: "
                    "pip install histoprompt-stack (in this repo: uv sync --all-packages)"
                ) from err
            real = typer.main.get_command(stack_app)
            assert isinstance(real, TyperGroup)
            self._real = real
        return self._real

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(self._load().list_commands(ctx))

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        return self._load().get_command(ctx, cmd_name)
