# The AIRuntime sidecar: the backend-facing gRPC service in front of Triton.
#
#   docker build -f docker/sidecar.Dockerfile -t ruth/sidecar:0.1.0 .
#
# The project with its `sidecar` extra (pyproject.toml), every package pinned by the project's lock for
# the image's Python (`constraints/py3.X.txt`); tests/deploy checks that the extra covers the sidecar's
# imports. The generated protobuf code (sidecar/_proto/) is part of the copied source: it is
# committed, rebuilt only by `make proto`.
#
# Without Docker Hub: --build-arg PYTHON_IMAGE=ruth-standin/python:3.11-bookworm
# (scripts/standin_images.sh). pip reads a CA bundle given as the build secret `ca-certificates`
# when PIP_CERT names it (docker/triton.Dockerfile has the flags); the final stage does not keep it.

ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
# The base image's Python, which picks the project's lock.
ARG PYTHON_VERSION=3.11

FROM ${PYTHON_IMAGE} AS build
ARG PYTHON_VERSION
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY constraints/py${PYTHON_VERSION}.txt ./constraints.txt
COPY pyproject.toml README.md ./
COPY ruthgen ./ruthgen
COPY sidecar ./sidecar
COPY templates ./templates
# Neither the embedded tritonserver nor the generator's command-line tools: only the `sidecar` extra.
RUN --mount=type=secret,id=ca-certificates \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install -c constraints.txt ".[sidecar]" \
 && /opt/venv/bin/python -c "import sidecar._proto.airuntime_pb2_grpc"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The same numeric user as the tritonserver service: with a shared PID namespace the sidecar
# may then signal a hung Python-backend stub, which needs no extra capability.
RUN groupadd --system --gid 10001 ruth \
 && useradd --system --uid 10001 --gid ruth --no-create-home --shell /usr/sbin/nologin ruth
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["python", "-m", "sidecar"]
