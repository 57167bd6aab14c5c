"""One module per command group; each imports only typer at the top. The option and
argument types below are the ones several groups share, so they read the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

from histoprompt.core.names import check_slide_id

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON output.")]
SlideId = Annotated[str, typer.Argument(help="A processed slide's id.", callback=check_slide_id)]
