# Many environments in one image, for pools that serve many environments from each replica.
ARG RUNTIME_IMAGE=agentworld/runtime:local
FROM ${RUNTIME_IMAGE}
ARG SUITE
ARG ENV_IDS
ARG CONTENT_HASH
LABEL org.opencontainers.image.title="${SUITE}" \
      org.opencontainers.image.version="${CONTENT_HASH}" \
      dev.agentworld.suite="${SUITE}" \
      dev.agentworld.env-ids="${ENV_IDS}" \
      dev.agentworld.content-hash="${CONTENT_HASH}"
COPY bundles/ /bundles/
