"""Names shared by the controller, the Helm chart, the gateway and envd (the pod annotation contract lives here)."""

GROUP = "agentworld.dev"
VERSION = "v1alpha1"
PLURAL = "envpools"
KIND = "EnvPool"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "agentworld-controller"

# Labels on every object the controller creates.
LABEL_POOL = "agentworld.dev/pool"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "agentworld-controller"
LABEL_TEMPLATE_HASH = "agentworld.dev/template-hash"
# Set on pods chosen for scale-down: the gateway stops placing new sessions on them (select `!agentworld.dev/draining`).
LABEL_DRAINING = "agentworld.dev/draining"

# Written by envd (or the gateway) on its own pod: the number of sessions it currently hosts. kwok pods run no
# containers, so tests and benchmarks set it directly; the controller only reads it.
ANN_ACTIVE_SESSIONS = "agentworld.dev/active-sessions"
# Written by the controller when it starts draining a pod: RFC 3339 time after which the pod is deleted anyway.
ANN_DRAIN_DEADLINE = "agentworld.dev/drain-deadline"

POOL_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_POOL}"
CONTAINER_NAME = "envd"
RUN_AS_USER = 10001
