"""histoprompt.stack: the local service stack (Kafka, MinIO or SeaweedFS S3, Triton, Prometheus).

`up()` starts every service on free 127.0.0.1 ports and returns a `StackHandle`;
`down()` and `status()` work from any process through `<state dir>/state.json`.
"""

from __future__ import annotations

from histoprompt.stack.errors import StackError
from histoprompt.stack.handle import StackHandle
from histoprompt.stack.launcher import StackStatus, attach, down, status, up
from histoprompt.stack.settings import StackSettings

__all__ = [
    "StackError",
    "StackHandle",
    "StackSettings",
    "StackStatus",
    "attach",
    "down",
    "status",
    "up",
]
