# kerasserve: serves the model repository over TF Serving REST, KServe v2 and the task routes.
#
#   CPU image (default):  docker build -t kerasserve:latest .
#   GPU image:            docker build --build-arg VARIANT=gpu -t kerasserve:gpu .
#
# Needs BuildKit (Docker's default builder since 23.0): it builds only the stages the chosen
# VARIANT uses, so a CPU build never pulls the CUDA base image.
# Behind a package mirror or proxy, pass pip's own settings as build args, for example
#   --build-arg PIP_INDEX_URL=https://mirror.example/simple
# (also PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_TRUSTED_HOST, PIP_NO_INDEX). They exist only in
# the builder stage and never reach the final image.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.5.1-base-ubuntu22.04

# ---------------------------------------------------------------- bases: Python 3.11 per variant
FROM ${PYTHON_IMAGE} AS base-cpu
ENV KERASSERVE_GPU_MEMORY_GROWTH=false

FROM ${CUDA_IMAGE} AS base-gpu
# CUDA and cuDNN come as wheels with tensorflow[and-cuda]; the CUDA base adds the NVIDIA
# container runtime settings (visible devices, driver capabilities) and Ubuntu's Python 3.11.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
# Grow GPU memory on demand, so one container does not reserve the whole card.
ENV KERASSERVE_GPU_MEMORY_GROWTH=true

# ---------------------------------------------------------------- requirements.txt
# hadolint ignore=DL3006
FROM base-${VARIANT} AS requirements
ARG VARIANT
WORKDIR /src
COPY pyproject.toml deploy/docker/requirements.py ./
RUN python3.11 requirements.py "${VARIANT}" pyproject.toml > requirements.txt

# ---------------------------------------------------------------- deps: /opt/venv, dependencies only
# hadolint ignore=DL3006
FROM base-${VARIANT} AS deps
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_NO_INDEX
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Keyed on the requirement list alone: this heavy layer (TensorFlow) stays cached across code
# edits and pyproject.toml edits that do not change the image's dependencies.
COPY --from=requirements /src/requirements.txt ./
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install -r requirements.txt

# ---------------------------------------------------------------- wheel: the project itself
FROM deps AS wheel
COPY app ./app
COPY training ./training
COPY README.md* pyproject.toml ./
RUN /opt/venv/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# ---------------------------------------------------------------- runtime
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
LABEL org.opencontainers.image.title="kerasserve" \
      org.opencontainers.image.description="TensorFlow/Keras model server: TF Serving REST, KServe v2, dynamic batching, hot reload" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed non-root uid in group 0, so the image also runs under an arbitrary uid (OpenShift).
RUN useradd --system --uid 10001 --gid 0 --create-home --home-dir /home/kerasserve \
      --shell /usr/sbin/nologin kerasserve
COPY --from=deps /opt/venv /opt/venv
# The project wheel goes in its own small layer: a code change never re-copies the dependencies.
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && /opt/venv/bin/python -c "import app, training"
COPY deploy/docker/healthcheck.py deploy/docker/seed_repository.py /opt/kerasserve/
# The bundled models are the default repository; mount a volume on /models to replace them.
# Owned by the service user so a training run in this image can publish new versions there.
COPY --chown=10001:0 models /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    KERAS_HOME=/home/kerasserve/.keras \
    TF_CPP_MIN_LOG_LEVEL=1 \
    KERASSERVE_HOST=0.0.0.0 \
    KERASSERVE_PORT=8000 \
    KERASSERVE_GRPC_PORT=8001 \
    KERASSERVE_MODEL_REPOSITORY=/models \
    KERASSERVE_WORKERS=1 \
    KERASSERVE_DEVICE=auto \
    KERASSERVE_LOG_LEVEL=info
# From /, the training CLI's default repository ("models") is the same /models.
WORKDIR /
USER 10001:0
# HTTP (TF Serving REST, KServe v2, tasks, metrics) and gRPC (TF Serving, KServe v2, health).
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "/opt/kerasserve/healthcheck.py"]
# Every option comes from KERASSERVE_* variables (see `docker run IMAGE --help`); arguments
# given to `docker run IMAGE ...` are appended and win over the environment.
ENTRYPOINT ["python", "-m", "app"]
