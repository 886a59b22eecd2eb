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

# The envd container's contract with the gateway (agentworld.gateway.kube) and envd (agentworld.placement).
GRPC_PORT_NAME = "grpc"
DEFAULT_GRPC_PORT = 50051
# The pod's own name, from the downward API: envd writes it into its session ids so any gateway routes them.
ENV_POD_NAME = "AGENTWORLD_POD_NAME"
# Overrides the pod IP:port the gateway dials (gateways outside the cluster network: port-forwards, kwok tests).
ANN_ENDPOINT = "agentworld.dev/endpoint"
# Bearer tokens (agentworld.auth): a Secret key holding one token per line, mounted as a directory (so a rotated
# Secret reaches the running pod) and named to envd and the gateway by ENV_TOKEN_FILE.
ENV_TOKEN_FILE = "AGENTWORLD_TOKEN_FILE"
TOKEN_SECRET_KEY = "tokens"
TOKEN_MOUNT_DIR = "/var/run/agentworld/auth"

# Leader election (controller HA): replicas compete for one coordination.k8s.io/v1 Lease in their own namespace;
# only its holder reconciles. A standby takes over LEASE_DURATION_S after the leader's last renewal (at once when
# the leader released it on shutdown); a leader that could not renew for RENEW_DEADLINE_S stops and exits.
LEASE_NAME = "agentworld-controller"
LEASE_DURATION_S = 15
RENEW_DEADLINE_S = 10
RETRY_PERIOD_S = 2
# The controller pod's own name and namespace (downward API): the candidate identity and the Lease's namespace.
ENV_CONTROLLER_POD_NAME = "POD_NAME"
ENV_CONTROLLER_POD_NAMESPACE = "POD_NAMESPACE"
