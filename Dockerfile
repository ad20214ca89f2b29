# syntax=docker/dockerfile:1
#
# Two images from one file:
#   docker build -t wno .                                # default (last stage): workers and the CLI
#   docker build --target mlflow -t wno-mlflow .         # the MLflow tracking server for compose
#
# TORCH_VERSION must equal the torch pin in pyproject.toml (tests/test_deploy.py checks it): the
# base image brings that CUDA build of torch, so installing the project does not download another.
ARG TORCH_VERSION=2.14.1
ARG CUDA_VERSION=13.0
ARG CUDNN_VERSION=9
ARG MLFLOW_VERSION=3.17.2

# ---------------------------------------------------------------------------------------------
# MLflow tracking server: small, no CUDA. psycopg (v3) is the driver for the
# postgresql+psycopg:// backend URI that docker-compose.yml gives it.
FROM python:3.11-slim AS mlflow
ARG MLFLOW_VERSION
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "mlflow==${MLFLOW_VERSION}" "psycopg[binary]>=3.1,<4" \
 && useradd --create-home --uid 1000 mlflow \
 && mkdir -p /var/lib/mlflow/artifacts \
 && chown -R mlflow:mlflow /var/lib/mlflow
USER mlflow
WORKDIR /var/lib/mlflow
EXPOSE 5000
# /health is exempt from MLflow's host-header check, so this works whatever --allowed-hosts says.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]

# ---------------------------------------------------------------------------------------------
# wno: `wno worker`, `wno study`, `wno report`, ... on a CUDA build of the pinned torch.
FROM pytorch/pytorch:${TORCH_VERSION}-cuda${CUDA_VERSION}-cudnn${CUDNN_VERSION}-runtime AS wno
ARG TORCH_VERSION
# The user's ids: match them to the host user (WNO_UID/WNO_GID in .env) so bind-mounted data
# and report folders stay writable by both.
ARG UID=1000
ARG GID=1000
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WNO_HOME=/var/lib/wno \
    WNO_DATA_DIR=/data \
    WNO_CHECKPOINT_DIR=/var/lib/wno/checkpoints

# --non-unique: some CUDA base images already have a user with uid 1000 (ubuntu).
RUN groupadd --non-unique --gid "${GID}" wno \
 && useradd --non-unique --uid "${UID}" --gid "${GID}" --create-home --shell /bin/bash wno \
 && mkdir -p /app /data /var/lib/wno/checkpoints /var/lib/wno/reports \
 && chown -R wno:wno /data /var/lib/wno
WORKDIR /app

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when the dependency
# list changes, not on every source edit. The check fails the build if pip had to replace the
# base image's torch (a different pin) or if the torch it has cannot use CUDA.
COPY pyproject.toml ./
RUN python -c "import tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(deps))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && python -c "import torch; v = torch.__version__.split('+')[0]; \
assert v == '${TORCH_VERSION}', f'torch {v} in the image, ${TORCH_VERSION} pinned'; \
assert torch.version.cuda, 'torch in the image is a CPU build'" \
 && rm /tmp/requirements.txt

# The project itself (no dependencies left to resolve), then the study definitions.
COPY README.md ./
COPY wno ./wno
RUN pip install --no-deps . && wno --help > /dev/null
COPY studies ./studies

USER wno
# `wno doctor --quick` checks versions, the devices, the storage and the tracking server (not the
# model or the data set, which the full `wno doctor` also tries) and exits non-zero when something
# a worker needs is missing.
HEALTHCHECK --interval=2m --timeout=60s --start-period=2m --retries=2 CMD ["wno", "doctor", "--quick"]
ENTRYPOINT ["wno"]
CMD ["--help"]
