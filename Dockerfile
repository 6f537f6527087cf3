# syntax=docker/dockerfile:1
# SOP Bot container image.
#
#   docker build -t sop-bot .
#   docker run --read-only --tmpfs /tmp -v sopbot-data:/data \
#     -v "$PWD/sopbot.yaml:/etc/sopbot/sopbot.yaml:ro" -e SOPBOT_MATTERMOST__TOKEN=... \
#     sop-bot run --config /etc/sopbot/sopbot.yaml
#
# Dependencies come only from requirements.lock (pinned, with hashes); regenerate it after
# changing pyproject.toml's dependencies:
#   uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -o requirements.lock
#
# tests/deploy/test_dockerfile.py runs the builder stage's RUN steps in a temporary directory:
# keep every path in those steps behind an ENV/ARG variable (no literal absolute paths) and
# the build context defined by .dockerignore.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtualenv with the locked dependencies and the project's wheel -------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    WHEEL_DIR=/tmp/wheels

WORKDIR /src

# The venv gets no pip of its own: the base image's pip installs into it.
RUN python -m venv --without-pip "$VIRTUAL_ENV"

COPY requirements.lock ./
RUN python -m pip --python "$VIRTUAL_ENV/bin/python" install \
        --require-hashes --only-binary=:all: --no-deps -r requirements.lock

COPY . .
RUN python -m pip wheel --no-deps --wheel-dir "$WHEEL_DIR" . \
 && python -m pip --python "$VIRTUAL_ENV/bin/python" install --no-deps \
        --no-index --find-links "$WHEEL_DIR" sop-bot \
 && python -m pip --python "$VIRTUAL_ENV/bin/python" check

# ---- runtime: the venv and nothing else ----------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="sop-bot" \
      org.opencontainers.image.description="ChatOps bot for Mattermost that runs the platform troubleshooting runbook"

# uid/gid 10001 (the chart's runAsUser); /data holds the SQLite store and is the only
# writable place besides /tmp, so the root filesystem can be mounted read-only.
RUN groupadd --system --gid 10001 sopbot \
 && useradd --system --no-log-init -l --uid 10001 --gid 10001 --home-dir /data \
        --shell /usr/sbin/nologin sopbot \
 && mkdir -p /data \
 && chown 10001:10001 /data

COPY --from=builder /opt/venv /opt/venv

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    SOPBOT_SERVER__HOST=0.0.0.0 \
    SOPBOT_SERVER__PORT=8080 \
    SOPBOT_STORE__PATH=/data/sopbot.db

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080

ENTRYPOINT ["sopbot"]
CMD ["run"]
