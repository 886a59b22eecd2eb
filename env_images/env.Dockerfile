# One environment: the runtime image plus one bundle (a few hundred KB). Built by `agentworld images build`.
ARG RUNTIME_IMAGE=agentworld/runtime:local
FROM ${RUNTIME_IMAGE}
ARG ENV_ID
ARG CONTENT_HASH
ARG TITLE=""
ARG DESCRIPTION=""
LABEL org.opencontainers.image.title="${TITLE}" \
      org.opencontainers.image.description="${DESCRIPTION}" \
      org.opencontainers.image.version="${CONTENT_HASH}" \
      dev.agentworld.env-id="${ENV_ID}" \
      dev.agentworld.content-hash="${CONTENT_HASH}"
ENV AGENTWORLD_ENV_ID=${ENV_ID}
COPY bundles/ /bundles/
