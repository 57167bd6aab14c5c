"""ONNX Runtime session wrapper used by the cpu-flavour python-backend models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from histoprompt.serving.errors import ModelConfigError


class OnnxRunner:
    """One ONNX Runtime CPU session; `run` maps the single input to all outputs."""

    def __init__(self, path: Path, intra_op_threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ModelConfigError("onnxruntime is not installed: pip install onnxruntime") from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Idle pool threads spin-wait for the next run by default: on a node whose cores
        # also decode and serve, that burns CPU for nothing (results are unchanged).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise ModelConfigError(f"cannot load ONNX model {path}: {err}") from err
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelConfigError(f"{path} must have exactly one input, has {len(inputs)}")
        self.input_name = inputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, array: NDArray[Any]) -> dict[str, NDArray[Any]]:
        outs = self.session.run(None, {self.input_name: array})
        return dict(zip(self.output_names, outs, strict=True))
