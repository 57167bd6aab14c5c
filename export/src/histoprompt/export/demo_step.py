"""`make demo` step: train (or reuse) the SYNTHETIC demo alignment and serve it in Triton.

Registered in histoprompt.stack.demo.DEMO_STEPS as "histoprompt.export.demo_step:serve_models".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from histoprompt.core import names

if TYPE_CHECKING:
    from rich.console import Console

SERVED = names.ALL_MODELS


class DemoStack(Protocol):
    """What this step uses of histoprompt.stack's StackHandle; export does not depend on stack."""

    @property
    def state_dir(self) -> Path: ...

    @property
    def model_repository(self) -> Path: ...

    @property
    def triton_grpc(self) -> str: ...


def serve_models(handle: DemoStack, console: Console) -> None:
    """Build the demo bundle into the stack's model repository and load every model."""
    import tritonclient.grpc as grpcclient

    from histoprompt.export.bundle import build_demo_bundle

    console.print("training the alignment on the SYNTHETIC cohort (cached after the first run)")
    bundle = build_demo_bundle(
        handle.state_dir / "demo-models", seed=0, repo_dir=handle.model_repository
    )
    val, base = bundle.metrics["val"], bundle.metrics["val_unaligned"]
    console.print(
        f"model {bundle.card.version} (UNTRAINED tiny encoder, SYNTHETIC cohort): held-out "
        f"Recall@5 {val['recall@5']:.2f} (chance {val['chance@5']:.2f}, unaligned "
        f"{base['recall@5']:.2f}); ONNX parity max abs err "
        f"{max(r['max_abs_err'] for r in bundle.parity.values()):.1e}"
    )
    client = grpcclient.InferenceServerClient(handle.triton_grpc)
    try:
        for model in SERVED:
            client.load_model(model)
        ready = [m for m in SERVED if client.is_model_ready(m)]
    finally:
        client.close()
    console.print(f"Triton serves: {', '.join(ready)}")
