# streamrun as a container image (docs/scaling-out.md: "Containers").
#
#   docker build -t streamrun .
#   docker run --rm -e OPENAI_API_KEY -v "$PWD/jobs:/jobs:ro" -v "$PWD/data:/data" \
#       streamrun job /jobs/my-job.toml
#
# Relative paths in a job file are relative to the job file, so a job mounted
# at /jobs should name absolute paths under /data (see jobs/k8s-cronjob.yaml).
# tests/test_deploy.py repeats this file's `pip install` in a fresh virtualenv
# and checks ENTRYPOINT, STOPSIGNAL and USER; keep one instruction per line.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# Only what the package build needs (pyproject names README.md as its readme);
# .dockerignore keeps .venv, outputs and .git out of the context.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runner ./runner
RUN pip install '.[report,speed]' && cd / && rm -rf /src

# A numeric non-root user, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 streamrun \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin streamrun \
    && mkdir -p /data /jobs \
    && chown 10001:10001 /data

# /data: inputs and outputs (writable by uid 10001).  /jobs: the mount point
# for job files, read-only (a bind mount or a Kubernetes ConfigMap).
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001

# streamrun drains in-flight requests on SIGTERM (up to drain_timeout) and exits 143;
# give `docker stop -t` / terminationGracePeriodSeconds the drain timeout plus a margin.
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamrun"]
CMD ["--help"]
