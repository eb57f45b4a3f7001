# NVIDIA's tritonserver image plus what the generated repository needs inside it.
#
# Stages (pick one with --target):
#   runtime  the server: NVIDIA's image, the wrapper's base packages for the image's Python
#            (3.10 in 24.10), and the user the sidecar shares (uid 10001). Serves a repository
#            mounted at /opt/ruth/model_repository (docker-compose.yml).
#   ruthgen  runtime + the project's generator. `ruthgen build` run in it builds every plugin's
#            Python environment (ruthgen.envs) with the image's own Python 3.10 — the one the
#            stub embeds — under /opt/ruth/envs, where the server reads it.
#   bundle   (default) runtime + a repository generated from ai/models at image build time,
#            environments included: one self-contained image per release (Kubernetes).
#
#   docker build -f docker/triton.Dockerfile --target runtime -t ruth/tritonserver:0.1.0-24.10 .
#   docker build -f docker/triton.Dockerfile --build-arg RUTH_TARGET=gpu -t ruth/models:0.1.0 .
#   Jetson (JetPack 6): --build-arg TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3-igpu
#                       --build-arg RUTH_TARGET=jetson
#   Without NGC access: --build-arg TRITON_IMAGE=ruth-standin/tritonserver:2.51.0-bookworm
#                       (scripts/standin_images.sh; docker/docker-compose.standin.yml)
#
# pip reads a CA bundle given as the build secret `ca-certificates` when PIP_CERT names it
# (`--secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt
#   --build-arg PIP_CERT=/run/secrets/ca-certificates`); no stage keeps it.

ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
# The base image's Python, which picks the project's lock: 3.10 in NVIDIA's 24.10 images, 3.11 in the
# stand-in (docker/docker-compose.standin.yml).
ARG PYTHON_VERSION=3.10

FROM ${TRITON_IMAGE} AS runtime
ARG PYTHON_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONNOUSERSITE=1
ARG PIP_CERT
COPY constraints/py${PYTHON_VERSION}.txt /opt/ruth/constraints.txt
# What the generated wrapper imports inside the stub, pinned by the project's lock. numpy stays
# below 2: Triton 24.10's stub reads numpy 1.x's memory layout.
RUN --mount=type=secret,id=ca-certificates \
    python3 -m pip install -c /opt/ruth/constraints.txt \
        fastjsonschema \
        numpy \
        pillow \
        pyyaml \
 && python3 -c "import numpy; assert int(numpy.__version__.split('.')[0]) < 2, numpy.__version__"
RUN groupadd --system --gid 10001 ruth \
 && useradd --system --uid 10001 --gid ruth --no-create-home --shell /usr/sbin/nologin ruth \
 && mkdir -p /opt/ruth/model_repository /opt/ruth/envs \
 && chown ruth:ruth /opt/ruth/model_repository /opt/ruth/envs
USER 10001:10001
WORKDIR /opt/ruth

FROM runtime AS ruthgen
ARG PIP_CERT
USER root
# `python -m venv` for the plugins' environments.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
# The generator goes into the image's own Python, not a venv of its own: an environment is a venv
# of the interpreter that builds it, and the runtime stage has only /usr/bin/python3.
# ruthstack holds the `ruthgen` console script; its `up` and `infer` need the sidecar, which this
# image does not have, and import it only when they run.
COPY pyproject.toml README.md /opt/ruth/src/
COPY ruthgen /opt/ruth/src/ruthgen
COPY ruthstack /opt/ruth/src/ruthstack
COPY templates /opt/ruth/src/templates
# The project with its `generator` extra (pyproject.toml), pinned by the same lock.
RUN --mount=type=secret,id=ca-certificates \
    python3 -m pip install -c /opt/ruth/constraints.txt "/opt/ruth/src[generator]" \
 && rm -rf /opt/ruth/src
# ruthgen.envs builds every environment under $RUTH_ENV_CACHE, the path Triton reads it from.
ENV RUTH_ENV_CACHE=/opt/ruth/envs
USER 10001:10001
ENTRYPOINT ["ruthgen"]
CMD ["--help"]

FROM ruthgen AS bundle-build
ARG RUTH_TARGET=gpu
ARG PIP_CERT
COPY --chown=10001:10001 ai/models /opt/ruth/ai/models
RUN --mount=type=secret,id=ca-certificates,uid=10001 \
    ruthgen build --target "${RUTH_TARGET}" --models /opt/ruth/ai/models --out /opt/ruth/model_repository \
 && rm -rf /opt/ruth/envs/_wheels

FROM runtime AS bundle
COPY --from=bundle-build /opt/ruth/model_repository /opt/ruth/model_repository
COPY --from=bundle-build /opt/ruth/envs /opt/ruth/envs
