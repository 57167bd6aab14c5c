"""`python -m histoprompt.stack up|down|status`."""

from __future__ import annotations

from histoprompt.stack.cli import app

if __name__ == "__main__":
    app()
