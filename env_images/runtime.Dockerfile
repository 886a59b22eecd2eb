# agentworld runtime: Python + agentworld (envd) in a venv, non-root, grpc.health.v1 health check.
# BASE_IMAGE defaults to the registry-free local base (`make base-image`, built from Debian packages);
# with registry access, pass e.g. --build-arg BASE_IMAGE=python:3.11-slim. Its Python must be 3.11 (the wheels').
# Build context (made by `agentworld images build`): wheels/deps/ (dependency wheels, pip.whl, requirements.txt)
# wheels/app/ (the agentworld wheel) and bin/ (agentworld-router, when built). No network is needed inside the
# build: pip runs with --no-index.
ARG BASE_IMAGE=agentworld/python-base:local
FROM ${BASE_IMAGE}

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/agentworld \
    PATH=/opt/agentworld/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp

# Precompiled stdlib: the root filesystem is read-only at run time, so nothing could be cached on first start.
RUN python3 -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()['stdlib'], quiet=2, workers=0)" \
 && python3 -m venv --without-pip /opt/agentworld \
 && echo 'agentworld:x:10001:10001:agentworld:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'agentworld:x:10001:' >> /etc/group \
 && mkdir -p /bundles

# Dependencies first (a layer that changes rarely), then agentworld itself.
COPY wheels/deps/ /tmp/wheels/
RUN python /tmp/wheels/pip.whl/pip install --no-index --no-cache-dir --disable-pip-version-check \
        --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
 && rm -rf /tmp/wheels
COPY wheels/app/ /tmp/app/
RUN for w in /tmp/app/agentworld-*.whl; do \
        python /tmp/app/pip.whl/pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check "$w"; \
    done \
 && rm -rf /tmp/app
# The gateway's Go data plane (a static binary; the directory is empty when it was not built).
COPY bin/ /opt/agentworld/bin/

LABEL org.opencontainers.image.title="agentworld-runtime" \
      org.opencontainers.image.description="envd: synthesised tool-using environments served over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.agentworld.runtime="true"

USER 10001:10001
WORKDIR /tmp
EXPOSE 50051
# Each check starts a Python that imports grpc (~0.2 CPU-s): keep the interval long so 50 replicas on a small host
# are not slowed down by their own health checks.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "agentworld.images.healthcheck", "127.0.0.1:50051"]
# Serves every bundle under /bundles (one per environment image, many in a suite image).
ENTRYPOINT ["agentworld", "serve", "/bundles", "--host", "0.0.0.0", "--port", "50051"]
