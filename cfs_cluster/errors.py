"""The server's error tree: every error a CFS node or facet answers with.

Every error carries the HTTP status a server should answer with (``status``) and the three
texts of the CFS ``ErrorResponse`` body (spec §2.1), so one exception handler renders them all.
Every ``CfsError`` subclass is defined here, so this tree is the whole list:

    CfsError
    ├── BadRequest            400  malformed JSON, wrong types, values out of range
    │   ├── PayloadTooLarge   413  body over the size limit
    │   ├── HeadersTooLarge   431  request line and headers over the size limit
    │   └── BackupError       400  a backup file is unreadable, a restore target unusable
    ├── Unauthorized          401  missing or wrong credentials
    ├── InvalidToken          401  a Bearer token malformed, forged, expired or revoked
    ├── MemberAuthFailed      401  an internal request without a valid member signature
    ├── Forbidden             403  valid credentials, not the route's role
    ├── NotFound              404  unknown group, session, route
    ├── MethodNotAllowed      405
    ├── Conflict              409  create with another configuration, delete a busy group
    ├── TooManyRequests       429  heartbeat rate limit, authentication back-off
    ├── OAuthError        4xx, 503 a token request refused (an RFC 6749 §5.2 body)
    └── Unavailable           503  no leader, no quorum, replication timed out (Retry-After)
        └── StorageUnavailable 503 the leader cannot write its journal (disk full, I/O error)

Not part of it, on purpose, because none of them is ever an HTTP answer of this service:

- The agent's client-side failures, ``agent.transport.EndpointError`` (Unreachable,
  EndpointUnavailable, EndpointNotFound, RateLimited, Refused): what an adapter *received* from
  a CFS node, raised inside the adapter's process. They are named apart so that a ``NotFound``
  answered by this server can never be mistaken for an endpoint the agent could not find, and
  the agent imports nothing of the server to raise them.
- ``cli.connect.CliError``: a command-line failure, printed as one line with an exit status.
- ``storage.journal.StorageCorrupt`` (a data file damaged: the node refuses to start), and
  ``WriteRefused``/``SyncFailed``, OSErrors at pysyncobj's journal seam; a refused write reaches
  clients as ``StorageUnavailable``.
"""

from __future__ import annotations

__all__ = [
    "MEMBER_CLOCK_SKEW",
    "BackupError",
    "BadRequest",
    "CfsError",
    "Conflict",
    "Forbidden",
    "HeadersTooLarge",
    "InvalidToken",
    "MemberAuthFailed",
    "MethodNotAllowed",
    "NotFound",
    "OAuthError",
    "PayloadTooLarge",
    "StorageUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
]

# Seconds a member's clock may differ from ours (security.memberauth checks it); here because
# MemberAuthFailed's resolution names it.
MEMBER_CLOCK_SKEW = 30.0


class CfsError(Exception):
    """Base of every error the service reports to a client."""

    status = 500
    default_error = "An error occurred."
    default_resolution = "Retry the request; if it keeps failing, check the service logs."

    def __init__(
        self,
        reason: str,
        *,
        error: str | None = None,
        resolution: str | None = None,
        retry_after: float | None = None,
        parameters: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error or self.default_error
        self.resolution = resolution or self.default_resolution
        self.retry_after = retry_after
        self.parameters = parameters or {}


class BadRequest(CfsError):
    """The request is malformed or a value is out of range."""

    status = 400
    default_error = "The request is invalid."
    default_resolution = "Correct the request as the reason says and send it again."


class PayloadTooLarge(BadRequest):
    """The request body is larger than the service accepts."""

    status = 413
    default_error = "The request body is too large."
    default_resolution = "Send a smaller body."


class HeadersTooLarge(BadRequest):
    """The request line and headers are larger than the service accepts."""

    status = 431
    default_error = "The request headers are too large."
    default_resolution = "Send fewer or shorter headers and a shorter URL."


class BackupError(BadRequest):
    """A backup file is unreadable, or a restore target is not usable."""

    default_error = "The backup cannot be used."
    default_resolution = (
        "Use an intact backup file written by `cfs backup`, and an empty data directory."
    )


class Unauthorized(CfsError):
    """Missing or wrong credentials."""

    status = 401
    default_error = "Authentication is required."
    default_resolution = "Send HTTP Basic credentials of a user of this service."


class InvalidToken(CfsError):
    """A Bearer token that is malformed, forged, expired, or of a removed client."""

    status = 401
    default_error = "The access token is not valid."
    default_resolution = "Request a new token from the token endpoint (/identity/connect/token)."

    def __init__(self, reason: str, *, lagging: bool = False) -> None:
        super().__init__(reason)
        # True when the token names a key, client or secret version this node may simply not
        # have applied yet (it is checked again after a read barrier before it is refused).
        self.lagging = lagging


class MemberAuthFailed(CfsError):
    """A request to an internal endpoint (or one claiming to come from a member) that does not
    carry a valid member signature."""

    status = 401
    default_error = "The request is not signed by a member of this cluster."
    default_resolution = (
        "Internal endpoints answer cluster members only. Between members: check that both "
        f"are in the cluster and that their clocks differ by less than {MEMBER_CLOCK_SKEW:g} s."
    )


class Forbidden(CfsError):
    """Valid credentials of a user without the required role."""

    status = 403
    default_error = "The user is not allowed to perform this operation."
    default_resolution = "Use an account of the administrators role."


class NotFound(CfsError):
    """The addressed group, session or route does not exist."""

    status = 404
    default_error = "The resource was not found."
    default_resolution = "Check the identifiers in the URL."


class MethodNotAllowed(CfsError):
    """The route exists but not for this HTTP method."""

    status = 405
    default_error = "The method is not allowed on this resource."
    default_resolution = "Use one of the methods in the Allow header."


class Conflict(CfsError):
    """The request conflicts with the current state."""

    status = 409
    default_error = "The request conflicts with the current state."
    default_resolution = "Read the resource, then decide whether to delete or change it."


class TooManyRequests(CfsError):
    """The client sent requests faster than allowed."""

    status = 429
    default_error = "Too many requests."
    default_resolution = "Wait for the time given in Retry-After before sending again."


class OAuthError(CfsError):
    """A token request refused per RFC 6749 §5.2; ``code`` is the ``error`` value."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.code = code
        self.status = status


class Unavailable(CfsError):
    """The node cannot serve this request now (no leader, no quorum, replication timeout)."""

    status = 503
    default_error = "The service is temporarily unavailable."
    default_resolution = "Retry after the time given in Retry-After, or use another node."


class StorageUnavailable(Unavailable):
    """The write cannot be made durable: the leader's disk is full or failing.

    503 rather than 507: adapters and load balancers know 503 as "retry later or elsewhere"
    (spec §2.3), and the write may succeed as soon as space is back or leadership moves.
    """

    default_error = "The write cannot be stored."
    default_resolution = (
        "Retry after the time given in Retry-After. Operators: free space on the leader's data "
        "directory (or move leadership with `cfs cluster transfer-leader`); writes resume by "
        "themselves."
    )
