"""TensorRT engine builder (FP16) for the gpu flavour's tile_encoder.

tensorrt is a GPU-only extra (`pip install histoprompt-export[gpu]`), imported lazily; the
optimisation profile spans batch 1..max_batch_size with `opt` at the preferred batch, so the
plan accepts exactly what Triton's dynamic batcher can send.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from histoprompt.export.errors import ExportError, OptionalDependencyError


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as err:
        raise OptionalDependencyError(
            "tensorrt is not installed; on a GPU node run "
            "`pip install 'histoprompt-export[gpu]'` (tensorrt-cu12)"
        ) from err
    return trt


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    *,
    input_name: str,
    row_shape: tuple[int, ...],
    max_batch: int,
    opt_batch: int = 64,
    fp16: bool = True,
    workspace_bytes: int = 4 << 30,
) -> Path:
    """Parse the ONNX file and serialise an engine with one dynamic-batch profile."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    opt = max(1, min(opt_batch, max_batch))
    profile.set_shape(input_name, (1, *row_shape), (opt, *row_shape), (max_batch, *row_shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    return plan_path


def run_engine(plan_path: Path, array: Any, input_name: str) -> Any:
    """Run a plan on one numpy batch (parity checks on the GPU node); returns numpy."""
    import numpy as np
    import torch

    trt = import_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    context = engine.create_execution_context()
    x = torch.from_numpy(np.ascontiguousarray(array)).cuda()
    context.set_input_shape(input_name, tuple(x.shape))
    out_name = next(
        engine.get_tensor_name(i)
        for i in range(engine.num_io_tensors)
        if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT
    )
    out = torch.empty(tuple(context.get_tensor_shape(out_name)), device="cuda")
    context.set_tensor_address(input_name, x.data_ptr())
    context.set_tensor_address(out_name, out.data_ptr())
    stream = torch.cuda.current_stream()
    context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.cpu().numpy()
