"""What the root command's options hand to every sub-command (kept in the Typer context)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from histoprompt.client.output import Output
    from histoprompt.client.settings import ClientSettings

__all__ = ["CliState", "get_state"]


@dataclass
class CliState:
    """Root options; settings are built on first use so `--help` never reads files."""

    config: Path | None = None
    env_file: Path | None = None
    json: bool = False
    debug: bool = False
    flags: dict[str, Any] = field(default_factory=dict)
    _settings: ClientSettings | None = None

    def settings(self) -> ClientSettings:
        if self._settings is None:
            from histoprompt.client.settings import load_settings

            self._settings = load_settings(self.config, self.env_file, **self.flags)
        return self._settings

    def output(self, as_json: bool = False) -> Output:
        from histoprompt.client.output import Output

        return Output.detect(json_mode=self.json or as_json)


def get_state(ctx: typer.Context) -> CliState:
    """The root state; a bare CliState when a sub-app runs on its own (tests)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj
