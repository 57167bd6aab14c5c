"""histoprompt.export: encoders, ABMIL alignment, training, synthetic cohort, ONNX/TensorRT
export and the Triton model-repository generator.

Kept light on purpose: nothing here imports torch at import time, so `histoprompt-export
--help` is instant and the torch-free `serving` modules load inside Triton's python backend.
"""

from histoprompt.core.version import __version__

__all__ = ["__version__"]
