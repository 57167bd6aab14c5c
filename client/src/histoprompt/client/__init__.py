"""histoprompt.client: the `histoprompt` command-line tool (Typer).

Importing this package is cheap on purpose: every command imports its heavy dependencies
(minio, kafka-python, tritonclient, numpy, pandas, Pillow) inside the function that runs it,
so `histoprompt --help` and shell completion answer at once.
"""

__all__: list[str] = []
