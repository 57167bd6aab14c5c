"""Glue between Triton's python backend and the handlers; model.py files subclass this.

`pb` is the `triton_python_backend_utils` module, passed in by model.py (it only exists inside
Triton), so this adapter also runs under unit tests with a stand-in. Bad input gives that
request an INVALID_ARG error; an unexpected failure gives it INTERNAL; neither kills the
model instance or the batch neighbours.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.errors import HistopromptError
from histoprompt.serving.context import ModelContext
from histoprompt.serving.errors import RequestError
from histoprompt.serving.handlers import HANDLERS, Handler, Inputs

log = logging.getLogger("histoprompt.serving")


class TritonModelBase:
    """Implements initialize/execute for the handler registered under `model_name`."""

    model_name: ClassVar[str] = ""
    pb: ClassVar[Any] = None

    def initialize(self, args: dict[str, str]) -> None:
        from histoprompt.core.allocator import tune_malloc

        tune_malloc()  # this stub churns tile batches: see histoprompt.core.allocator
        try:
            ctx = ModelContext.from_triton_args(args)
            factory = HANDLERS[self.model_name]
            self.handler: Handler = factory(ctx)
        except HistopromptError as err:
            raise self.pb.TritonModelException(f"{self.model_name}: {err}") from err
        except KeyError as err:
            raise self.pb.TritonModelException(f"no handler for {self.model_name}") from err

    def _inputs(self, request: Any) -> Inputs:
        out: Inputs = {}
        for name in self.handler.inputs:
            tensor = self.pb.get_input_tensor_by_name(request, name)
            out[name] = None if tensor is None else tensor.as_numpy()
        return out

    def _response(self, outputs: dict[str, NDArray[Any]]) -> Any:
        tensors = [self.pb.Tensor(name, outputs[name]) for name in self.handler.outputs]
        return self.pb.InferenceResponse(output_tensors=tensors)

    def _error(self, message: str, invalid: bool) -> Any:
        code = self.pb.TritonError.INVALID_ARG if invalid else self.pb.TritonError.INTERNAL
        return self.pb.InferenceResponse(error=self.pb.TritonError(message, code))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        checked: list[tuple[int, Inputs]] = []
        for i, request in enumerate(requests):
            try:
                checked.append((i, self.handler.check(self._inputs(request))))
            except RequestError as err:
                responses[i] = self._error(str(err), invalid=True)
        if self.handler.batched and len(checked) > 1:
            self._run_batched(checked, responses)
        else:
            for i, inputs in checked:
                responses[i] = self._run_one(inputs)
        return responses

    def _run_one(self, inputs: Inputs) -> Any:
        try:
            return self._response(self.handler.run(inputs))
        except RequestError as err:
            return self._error(str(err), invalid=True)
        except Exception as err:  # one request must never take the instance down
            log.exception("%s: request failed", self.model_name)
            return self._error(f"{type(err).__name__}: {err}", invalid=False)

    def _run_batched(self, checked: list[tuple[int, Inputs]], responses: list[Any]) -> None:
        name = self.handler.inputs[0]
        arrays = [inputs[name] for _, inputs in checked]
        shapes = {a.shape[1:] for a in arrays if a is not None}
        if len(shapes) != 1:  # different tile sizes: run them one by one
            for i, inputs in checked:
                responses[i] = self._run_one(inputs)
            return
        rows = [a.shape[0] for a in arrays if a is not None]
        merged: Inputs = {name: np.concatenate([a for a in arrays if a is not None])}
        try:
            outs = self.handler.run(merged)
        except Exception:
            for i, inputs in checked:
                responses[i] = self._run_one(inputs)
            return
        bounds = np.cumsum([0, *rows])
        for k, (i, _) in enumerate(checked):
            part = {o: v[bounds[k] : bounds[k + 1]] for o, v in outs.items()}
            responses[i] = self._response(part)

    def finalize(self) -> None:
        self.handler = None  # type: ignore[assignment]
