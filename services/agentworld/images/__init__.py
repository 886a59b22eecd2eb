"""Container images for environments and the local Docker backend.

Kept import-light (the container health check imports `agentworld.images.healthcheck`): the docker SDK is imported
inside the modules that need it.
"""
