"""Serving logic behind the Triton python-backend models (numpy + onnxruntime, no torch).

The `model.py` files in model_repository/ are thin adapters around these modules, so the
logic is importable, typed and unit-tested outside Triton.
"""
