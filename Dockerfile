# The ai-system image: the library and its `ai-system` command, non-root, in two variants.
#   docker build -t ai-system:cpu .                           # CPU build of torch
#   docker build --build-arg VARIANT=cuda -t ai-system:cuda . # PyPI's CUDA build of torch (CUDA runtime
#                                                             # inside the wheels; the node supplies the driver)
# The Kubernetes manifests in deployment/kubernetes/ run `ai-system:cuda` (the blueprint's `image`).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG VARIANT=cpu

# TORCH_VERSION: the torch the tests run (the Makefile's TORCH_SPEC).
FROM ${PYTHON_IMAGE} AS torch-cpu
ARG TORCH_VERSION=2.13.0
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu

FROM ${PYTHON_IMAGE} AS torch-cuda
ARG TORCH_VERSION=2.13.0
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}"

# torch-${VARIANT} names one of the two stages above, not an image from a registry.
# hadolint ignore=DL3006
FROM torch-${VARIANT} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ai_system ./ai_system
RUN /opt/venv/bin/pip install --no-cache-dir ./

FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="ai-system" \
      org.opencontainers.image.description="ai-system-design: training, serving, scheduling and deployment" \
      ai-system.variant="${VARIANT}"
RUN groupadd --gid 10001 ai-system \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin ai-system
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    AISYS_ARTIFACTS_DIR=/tmp/ai-system-artifacts
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
CMD ["ai-system", "--help"]
