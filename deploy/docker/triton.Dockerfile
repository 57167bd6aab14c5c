# syntax=docker/dockerfile:1
# Triton for histoprompt: the NGC tritonserver image plus what the python-backend models in
# model_repository/ import (histoprompt.core, histoprompt.serving, onnxruntime, numpy<2).
#   docker build -f deploy/docker/triton.Dockerfile -t histoprompt-triton:24.05 .
# Build context: the repository root. Never built in this repository's CI (no Docker
# engine there); checked statically with hadolint by tests/unit/test_dockerfiles.py.
#
# The NGC image's python backend embeds Python 3.10; histoprompt needs 3.11. As in the
# local stack (stack/src/histoprompt/stack/triton.py), the python backend gets the 3.11
# stub that nvidia-pytriton ships for the same Triton release (pytriton 0.5.8 = Triton 2.46
# = NGC 24.05), and the stub's embedded CPython finds the venv through the `python3` first on
# PATH. Keep TRITON_IMAGE and PYTRITON_VERSION on the same Triton release.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.05-py3
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
ARG PYTRITON_VERSION=0.5.8
ARG ONNXRUNTIME_GPU_VERSION=1.20.1

FROM ${UV_IMAGE} AS uv

FROM ${TRITON_IMAGE} AS build
ARG PYTRITON_VERSION
ARG ONNXRUNTIME_GPU_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Python 3.11 from Ubuntu 22.04 (the NGC base); apt versions follow its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 libpython3.11 \
 && rm -rf /var/lib/apt/lists/*
ENV UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1
COPY --from=uv /uv /usr/local/bin/uv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY core/pyproject.toml core/pyproject.toml
COPY wsi/pyproject.toml wsi/pyproject.toml
COPY serving/pyproject.toml serving/pyproject.toml
COPY export/pyproject.toml export/pyproject.toml
COPY ingest/pyproject.toml ingest/pyproject.toml
COPY client/pyproject.toml client/pyproject.toml
COPY stack/pyproject.toml stack/pyproject.toml
# histoprompt-core's locked dependencies, onnxruntime on CUDA, numpy<2 (the 2.46 stub's
# pybind11 predates numpy 2's ABI).
RUN uv venv /opt/histoprompt/venv --python /usr/bin/python3.11 \
 && uv export --frozen --no-dev --no-emit-workspace --no-hashes \
      --package histoprompt-core -o /tmp/requirements.txt \
 && uv pip install --python /opt/histoprompt/venv/bin/python --no-cache \
      -r /tmp/requirements.txt "numpy<2" "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"
COPY core/ core/
COPY serving/ serving/
# core and serving only: the generated model.py files import histoprompt.serving, which needs
# numpy and onnxruntime (installed above), never torch or the export package.
RUN uv pip install --python /opt/histoprompt/venv/bin/python --no-cache --no-deps ./core ./serving
# The 3.11 stub, taken from the pytriton wheel in a throwaway venv.
RUN uv venv /tmp/pytriton --python /usr/bin/python3.11 \
 && uv pip install --python /tmp/pytriton/bin/python --no-cache --no-deps "nvidia-pytriton==${PYTRITON_VERSION}" \
 && install -D -m 0755 \
      /tmp/pytriton/lib/python3.11/site-packages/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub \
      /opt/histoprompt/stub/triton_python_backend_stub \
 && rm -rf /tmp/pytriton

FROM ${TRITON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="histoprompt-triton" \
      org.opencontainers.image.description="NGC Triton with histoprompt's python-backend dependencies"
# Python 3.11 from Ubuntu 22.04 (the NGC base); apt versions follow its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 libpython3.11 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/histoprompt /opt/histoprompt
# The backend loads the stub from its own directory: swap in the 3.11 one.
RUN cp /opt/histoprompt/stub/triton_python_backend_stub \
       /opt/tritonserver/backends/python/triton_python_backend_stub
ENV PATH=/opt/histoprompt/venv/bin:$PATH \
    HOME=/tmp
# triton-server (uid 1000) is the NGC image's non-root user.
USER 1000:1000
EXPOSE 8000 8001 8002
# NGC's entrypoint (CUDA forward compatibility, driver checks) stays: the chart passes
# `tritonserver --flags` as args.
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]
CMD ["tritonserver"]
