# syntax=docker/dockerfile:1.10
# The cartridge image: the package with kfp, used by the pipeline components, the web API
# and the MLflow server. Build from the repository root:
#   docker build -f docker/cartridge.Dockerfile -t ghcr.io/cartridge-ml/cartridge:0.1.0 .
# The CUDA training image is the same recipe with PyTorch's CUDA wheels (they bring the
# CUDA runtime; the driver comes from the node through the NVIDIA container toolkit):
#   docker build -f docker/cartridge.Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#     -t ghcr.io/cartridge-ml/cartridge-train:0.1.0 .

FROM python:3.11.11-slim-bookworm AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# A C compiler for the Cython extensions; it stays in this stage. libc6-dev is left
# unpinned on purpose: it must match the base image's own libc6, whatever patch level.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc=4:12.2.0-3 libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# torch first, in its own layer: it depends only on TORCH_INDEX, so editing the source
# (skaffold dev) rebuilds the layers below and reuses this one. The cache mounts keep
# pip's wheels between builds without storing them in the image.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --index-url "${TORCH_INDEX}" torch==2.13.0
# Every other dependency from the lock file (pins with hashes, no extras: the local
# stack's servers stay out), in a layer that a source change does not rebuild; then the
# package itself, resolving nothing more.
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install --require-hashes -r requirements.lock
COPY pyproject.toml setup.py README.md ./
COPY src ./src
COPY kfp_pipelines ./kfp_pipelines
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install --no-deps . psycopg2-binary==2.9.10 \
    && /opt/venv/bin/pip check \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11.11-slim-bookworm AS runtime
# The commit the image is built from (the workflow passes github.sha): MLflow runs made
# in the image are tagged with it, as runs from a checkout are with its HEAD.
ARG GIT_COMMIT=unknown
# One image, many commands (pipeline steps, the web API, the MLflow server): each
# Kubernetes workload declares its own probes, so the image declares no health check.
# checkov:skip=CKV_DOCKER_2: probes live in each workload's manifest
LABEL org.opencontainers.image.source="https://github.com/cartridge-ml/cartridge" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.description="Cartridge: AlphaZero self-play, training, arena and serving"
RUN groupadd --gid 10001 cartridge \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin cartridge
COPY --from=build /opt/venv /opt/venv
# Promotion copies these configs next to each published model.
COPY triton_models /opt/cartridge/triton_models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    CARTRIDGE_HOME=/tmp/cartridge \
    CARTRIDGE_TRITON_TEMPLATES=/opt/cartridge/triton_models \
    CARTRIDGE_GIT_COMMIT=${GIT_COMMIT}
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["cartridge"]
CMD ["--help"]
