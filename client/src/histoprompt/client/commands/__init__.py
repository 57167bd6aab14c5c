"""One module per command group; each imports only typer at the top."""
