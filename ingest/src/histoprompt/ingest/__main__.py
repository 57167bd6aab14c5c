"""`python -m histoprompt.ingest run`: the same as the `histoprompt-ingest` script."""

from histoprompt.ingest.cli import app

if __name__ == "__main__":
    app()
