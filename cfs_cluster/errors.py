"""The server's error hierarchy: every error a CFS node or facet answers with.

A few leaves live next to their one user and subclass these (auth.Unauthorized and
auth.Forbidden, tokens.InvalidToken, api.identity.OAuthError, ops.backup.BackupError). The
agent's client-side failures are a separate tree, agent.transport.EndpointError (Unreachable,
EndpointUnavailable, EndpointNotFound, RateLimited, Refused), named so they cannot be mistaken
for these.

Every error carries the HTTP status a server should answer with (``status``) and the three
texts of the CFS ``ErrorResponse`` body (spec §2.1), so one exception handler renders them all.

    CfsError
    ├── BadRequest            400  malformed JSON, wrong types, values out of range
    │   ├── PayloadTooLarge   413  body over the size limit
    │   └── HeadersTooLarge   431  request line and headers over the size limit
    ├── NotFound              404  unknown group, session, route
    ├── MethodNotAllowed      405
    ├── Conflict              409  create with another configuration, delete a busy group
    ├── TooManyRequests       429  heartbeat rate limit
    └── Unavailable           503  no leader, no quorum, replication timed out (Retry-After)
        └── StorageUnavailable 503 the leader cannot write its journal (disk full, I/O error)
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "CfsError",
    "Conflict",
    "HeadersTooLarge",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "StorageUnavailable",
    "TooManyRequests",
    "Unavailable",
]


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
