"""INFO = [histoprompt.core.names file, onnxruntime version, TOPIC_INCOMING, S3 endpoint]."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        # Imported here so a model that cannot see the venv fails its load with the import error.
        import onnxruntime

        from histoprompt.core import names
        from histoprompt.core.settings import ConnectionSettings

        self.info = np.array(
            [
                names.__file__,
                onnxruntime.__version__,
                names.TOPIC_INCOMING,
                ConnectionSettings().s3_endpoint,
            ],
            dtype=np.object_,
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return [pb_utils.InferenceResponse([pb_utils.Tensor("INFO", self.info)]) for _ in requests]
