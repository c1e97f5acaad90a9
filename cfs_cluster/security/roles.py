"""Who may call which route: the roles, and ``ROUTE_ROLES``, the one table of the role each
route the app serves needs (the front door asks it for every request)."""

from __future__ import annotations

from cfs_cluster import engine
from cfs_cluster.protocol.heartbeat import PING_PATH, READ_PATH, RELAY_PATH

__all__ = [
    "ADMINISTRATORS",
    "MEMBERS",
    "ROUTE_ROLES",
    "USERS",
    "Role",
    "allows",
    "required_role",
]

Role = engine.Role
# The names the table below is written with. A record stores the plain string instead
# (engine.USERS, engine.ADMINISTRATORS; passwords.parse_role returns those).
USERS = Role.USERS
ADMINISTRATORS = Role.ADMINISTRATORS
MEMBERS = Role.MEMBERS  # the internal channel's routes: no account may call them

_GROUP = "/api/v1/clientfailover/groups/{group_id}"
_SESSION = _GROUP + "/clientsessions/{session_id}"
_CONFIG = "/api/v1/configuration"
_ANYONE = None  # public: no credentials needed

# Who may call what: one row per route the app serves, (method, path template, role needed).
# The front door reads a request's path as one of these routes (api/routes.py) and asks for
# the role of that row; create_app refuses to start unless the rows and the app's routes are
# the same set. docs/security.md "Authorization by route" is this table
# (tests/test_authorization.py keeps them equal).
ROUTE_ROLES: tuple[tuple[str, str, Role | None], ...] = (
    ("GET", "/healthz", _ANYONE),  # load balancers
    ("GET", "/readyz", _ANYONE),
    ("GET", "/identity/.well-known/openid-configuration", _ANYONE),
    ("POST", "/identity/connect/token", _ANYONE),  # authenticates the client itself
    ("GET", "/static-offline-docs/{file}", _ANYONE),  # Swagger UI and ReDoc's own files
    ("HEAD", "/static-offline-docs/{file}", _ANYONE),
    ("POST", RELAY_PATH, MEMBERS),
    ("POST", READ_PATH, MEMBERS),
    ("GET", PING_PATH, MEMBERS),
    ("GET", "/openapi.json", USERS),
    ("HEAD", "/openapi.json", USERS),
    ("GET", "/docs", USERS),
    ("GET", "/docs/oauth2-redirect", USERS),
    ("GET", "/redoc", USERS),
    ("GET", "/metrics", USERS),
    ("GET", "/api/v1/clientfailover", USERS),
    ("GET", "/api/v1/clientfailover/groups", USERS),
    ("POST", "/api/v1/clientfailover/groups", USERS),
    ("GET", _GROUP, USERS),
    ("DELETE", _GROUP, ADMINISTRATORS),
    ("GET", _GROUP + "/status", USERS),
    ("GET", _GROUP + "/events", USERS),
    ("GET", _GROUP + "/clientsessions", USERS),
    ("POST", _GROUP + "/clientsessions", USERS),
    ("GET", _SESSION, USERS),
    ("DELETE", _SESSION, USERS),  # an adapter unregisters itself
    ("POST", _SESSION + "/heartbeat", USERS),
    ("GET", _SESSION + "/role", USERS),
    ("POST", _SESSION + "/roleoverride", ADMINISTRATORS),
    ("GET", "/api/v1/cluster", USERS),
    ("GET", "/api/v1/cluster/backup", ADMINISTRATORS),  # secrets' hashes and signing keys
    ("POST", "/api/v1/cluster/members", ADMINISTRATORS),
    ("DELETE", "/api/v1/cluster/members/{member}", ADMINISTRATORS),
    ("POST", "/api/v1/cluster/transfer-leader", ADMINISTRATORS),
    ("POST", "/api/v1/cluster/member-key/rotate", ADMINISTRATORS),
    ("GET", "/api/v1/users", ADMINISTRATORS),
    ("POST", "/api/v1/users", ADMINISTRATORS),
    ("GET", "/api/v1/users/{name}", ADMINISTRATORS),
    ("PUT", "/api/v1/users/{name}", ADMINISTRATORS),
    ("DELETE", "/api/v1/users/{name}", ADMINISTRATORS),
    ("GET", "/api/v1/clients", ADMINISTRATORS),
    ("POST", "/api/v1/clients", ADMINISTRATORS),
    ("GET", "/api/v1/clients/{client_id}", ADMINISTRATORS),
    ("PUT", "/api/v1/clients/{client_id}", ADMINISTRATORS),
    ("DELETE", "/api/v1/clients/{client_id}", ADMINISTRATORS),
    ("POST", "/api/v1/clients/{client_id}/secret", ADMINISTRATORS),
    ("GET", "/api/v1/identity/signing-keys", ADMINISTRATORS),
    ("POST", "/api/v1/identity/signing-keys/rotate", ADMINISTRATORS),
    ("GET", _CONFIG, ADMINISTRATORS),
    ("PUT", _CONFIG, ADMINISTRATORS),
    ("GET", _CONFIG + "/logging", ADMINISTRATORS),
    ("PUT", _CONFIG + "/logging", ADMINISTRATORS),
    ("GET", _CONFIG + "/healthEndpoints", ADMINISTRATORS),
    ("POST", _CONFIG + "/healthEndpoints", ADMINISTRATORS),
    ("PUT", _CONFIG + "/healthEndpoints", ADMINISTRATORS),
    ("DELETE", _CONFIG + "/healthEndpoints", ADMINISTRATORS),
    ("GET", _CONFIG + "/healthEndpoints/{endpoint_id}", ADMINISTRATORS),
    ("PUT", _CONFIG + "/healthEndpoints/{endpoint_id}", ADMINISTRATORS),
    ("DELETE", _CONFIG + "/healthEndpoints/{endpoint_id}", ADMINISTRATORS),
    # The dashboard's files hold no data (its data comes from the API with the user's own
    # credentials) and its login form must load before anyone has logged in; "who am I"
    # checks the credentials it is sent itself (api/dashboard.py).
    ("GET", "/", _ANYONE),
    ("GET", "/ui", _ANYONE),
    ("GET", "/ui/{asset}", _ANYONE),
    ("GET", "/api/v1/dashboard/me", _ANYONE),
    ("GET", "/api/v1/dashboard/groups", USERS),
    ("GET", "/api/v1/dashboard/groups/{group_id}", USERS),
    ("GET", "/api/v1/dashboard/events", USERS),
)
_ROLE_OF = {(method, template): role for method, template, role in ROUTE_ROLES}


def required_role(method: str, template: str) -> Role | None:
    """The role the route ``method template`` needs (None = public).

    ``template`` is a route's path template as api/routes.py matched it, never a request path:
    a route missing from ROUTE_ROLES is a KeyError, and create_app checks there is none."""
    return _ROLE_OF[(method, template)]


def allows(role: str, required: Role) -> bool:
    """Whether an account of ``role`` may call a route that needs ``required``; no account may
    call a members-only route (only a member signature opens it)."""
    if required == MEMBERS:
        return False
    return required == USERS or role == ADMINISTRATORS
