# syntax=docker/dockerfile:1
# histoprompt ingest service image: histoprompt-core + histoprompt-ingest only, no torch.
#   docker build -f deploy/docker/ingest.Dockerfile -t histoprompt-ingest:0.1.0 .
#   GPU nodes (cuCIM, nvImageCodec):  --build-arg INGEST_EXTRAS=gpu
# Build context: the repository root. Never built in this repository's CI (no Docker
# engine there); checked statically with hadolint by tests/unit/test_dockerfiles.py.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
ARG INGEST_EXTRAS=""
ENV UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1
COPY --from=uv /uv /usr/local/bin/uv
WORKDIR /src
# uv reads the whole workspace definition; only core, wsi and ingest sources are installed.
COPY pyproject.toml uv.lock ./
COPY core/pyproject.toml core/pyproject.toml
COPY wsi/pyproject.toml wsi/pyproject.toml
COPY serving/pyproject.toml serving/pyproject.toml
COPY export/pyproject.toml export/pyproject.toml
COPY ingest/pyproject.toml ingest/pyproject.toml
COPY client/pyproject.toml client/pyproject.toml
COPY stack/pyproject.toml stack/pyproject.toml
# Third-party pins come from uv.lock, resolved for histoprompt-ingest alone.
RUN uv venv /opt/venv --python /usr/local/bin/python3.11 \
 && uv export --frozen --no-dev --no-emit-workspace --no-hashes \
      --package histoprompt-ingest ${INGEST_EXTRAS:+--extra ${INGEST_EXTRAS}} -o /tmp/requirements.txt \
 && uv pip install --python /opt/venv/bin/python --no-cache -r /tmp/requirements.txt
COPY core/ core/
COPY wsi/ wsi/
COPY ingest/ ingest/
RUN uv pip install --python /opt/venv/bin/python --no-cache --no-deps ./core ./wsi ./ingest \
 && if /opt/venv/bin/python -c "import torch" 2>/dev/null; then echo "torch leaked into the ingest image" >&2; exit 1; fi

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="histoprompt-ingest" \
      org.opencontainers.image.description="histoprompt ingest: Kafka S3 events -> tiles -> Triton -> results"
RUN groupadd --system --gid 10001 histoprompt \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin histoprompt
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 9108
ENTRYPOINT ["histoprompt-ingest"]
CMD ["run"]
