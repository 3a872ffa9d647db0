# syntax=docker/dockerfile:1
# access-hygiene operator image. Build: docker build -t access-hygiene:0.1.0 .
# Without a registry, on a local Debian base (mmdebstrap): make image (operator/access_hygiene/localcluster/image.py).
# The base is pinned to an exact Python patch release and Debian release; bump deliberately.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: build the wheel and a virtualenv holding it and its dependencies ------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/access-hygiene \
 && /opt/access-hygiene/bin/pip install "build==1.6.1"
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/access-hygiene/bin/python -m build --wheel --outdir /dist . \
 && /opt/access-hygiene/bin/pip uninstall --yes build pyproject_hooks packaging \
 && /opt/access-hygiene/bin/pip install /dist/access_hygiene-*.whl \
 && /opt/access-hygiene/bin/pip uninstall --yes pip \
 && /opt/access-hygiene/bin/python -m compileall -q /opt/access-hygiene

# --- final: the same slim base, the virtualenv, nothing to build with ---------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="access-hygiene" \
      org.opencontainers.image.description="Kubernetes operator that enforces access hygiene" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/access-hygiene/access-hygiene"
# The official Python base ships pip, setuptools and wheel in its site-packages; the operator never needs
# them at runtime. A base whose python has no pip (Debian's python3, as in `make image`) has none to remove.
RUN if python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("pip") is None)'; then \
      python -m pip uninstall --yes setuptools wheel pip; \
    fi
COPY --from=builder /opt/access-hygiene /opt/access-hygiene
ENV PATH=/opt/access-hygiene/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532 is the conventional "nonroot" UID/GID; the chart's pod security context uses the same. It has a passwd
# entry: Python's getpass.getuser() (kopf calls it) fails without one, and containerd adds none.
RUN groupadd --system --gid 65532 access-hygiene \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin access-hygiene
USER 65532:65532
# 9808: Prometheus /metrics. 8080: kopf liveness at /healthz (the chart's livenessProbe); no
# HEALTHCHECK because Kubernetes ignores it.
EXPOSE 9808 8080
ENTRYPOINT ["access-hygiene", "run"]
CMD ["--liveness=http://0.0.0.0:8080/healthz"]
