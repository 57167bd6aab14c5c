"""Ingest integration tests' set-up on a running stack: settings in a fresh consumer group,
and a slide file put in the slides bucket under a fresh prefix."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from histoprompt.core.s3 import make_minio
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack.feed import Uploaded, put_file, skip_group_to_end
from histoprompt.stack.handle import StackHandle


def fresh_group_settings(stack: StackHandle, prefix: str, **kw: Any) -> IngestSettings:
    """The stack's ingest settings (`kw` on top) in consumer group `<prefix>-<random>`, which
    starts at the incoming topic's end: earlier tests' events are not redelivered to it."""
    group = f"{prefix}-{uuid.uuid4().hex[:8]}"
    settings = IngestSettings.load(stack.env_file, ingest_group_id=group, **kw)
    skip_group_to_end(settings, group)
    return settings


def put_slide(settings: IngestSettings, prefix: str, path: Path) -> Uploaded:
    """`path` in the slides bucket as `<prefix>/<random>/<file name>` (nothing published)."""
    key = f"{prefix}/{uuid.uuid4().hex[:12]}/{path.name}"
    return put_file(make_minio(settings), settings.slides_bucket, key, path)
