"""histoprompt.core: contracts shared by every part (settings, schemas, names, units).

Light on purpose: numpy, pandas/pyarrow and pydantic only, so that the ingest
image and the CLI install without torch.
"""

from histoprompt.core.version import __version__

__all__ = ["__version__"]
