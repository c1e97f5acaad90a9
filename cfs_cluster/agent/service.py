"""The calls an agent makes to a CFS (spec §5.3), one method each, over an ``EndpointPool``.

No decisions live here: every method sends one request, checks the answer and returns what it
says; ``FailoverAgent`` decides what to do with it.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any
from urllib.parse import quote

import httpx

from cfs_cluster.agent.grant import RoleAnswer, parse_role_answer
from cfs_cluster.agent.settings import AgentSettings, default_session_name
from cfs_cluster.agent.tokens import BearerAuth, TokenProvider
from cfs_cluster.agent.transport import EndpointError, EndpointPool, Refused, check, session_path
from cfs_cluster.protocol.heartbeat import HELD_EPOCH, HELD_ROLE
from cfs_cluster.protocol.wire import (
    TICKS_PER_SECOND,
    ClientRole,
    format_datetime,
    format_timespan,
    parse_timespan,
)

__all__ = ["LONG_POLL_WAIT", "FailoverService", "make_client"]

log = logging.getLogger("cfs.agent")

# Seconds the service holds a role long-poll (it allows up to 60). Below the 30 s server
# timeout of compose/haproxy.cfg and common proxy defaults: a poll held as long as the
# balancer's timeout ends in a 504 instead of an answer.
LONG_POLL_WAIT = 25.0


def make_client(s: AgentSettings) -> httpx.AsyncClient:
    """The HTTP client of one agent: TLS, timeouts, and Basic or OAuth client credentials."""
    headers = {}
    auth: httpx.Auth | None = None
    if s.client_id is None:
        # PI Web API's CSRF convention; adapters send it whenever no ClientId is set (§5.3).
        headers["X-Requested-With"] = "AdapterFramework.Adapter"
    if s.username is not None and s.password is not None:
        auth = httpx.BasicAuth(s.username, s.password)
    verify: ssl.SSLContext | bool = s.verify_tls
    if s.verify_tls and s.ca_file is not None:
        verify = ssl.create_default_context(cafile=s.ca_file)
        verify.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a node's own certificate will do
    client = httpx.AsyncClient(timeout=s.request_timeout, verify=verify, headers=headers, auth=auth)
    if s.client_id is not None and s.client_secret is not None:
        provider = TokenProvider(
            client, s.client_id, s.client_secret, s.token_endpoint, s.endpoints
        )
        client.auth = BearerAuth(provider)
    return client


class FailoverService:
    """One session of one group on the service, reached through ``pool``."""

    def __init__(self, pool: EndpointPool, settings: AgentSettings, session_id: str) -> None:
        self.pool = pool
        self.settings = settings
        self.session_id = session_id

    async def register_group(self, timeout: float) -> float | None:
        """Create the group; when it exists, return the timeout (seconds) the service has."""
        gid = self.settings.group_id
        ticks = round(timeout * TICKS_PER_SECOND)
        body = {"Id": gid, "FailoverTimeout": format_timespan(ticks)}
        response = await self.pool.request("POST", "groups/", json=body)
        if response.status_code == 409:
            path = f"groups/{quote(gid, safe='')}"
            response = check(await self.pool.request("GET", path), "Group")
            return _group_timeout(response.json())
        check(response, f"Registering failover group {gid}")
        log.info("Registered failover group %s.", gid)
        return None

    async def register_session(self) -> None:
        gid = self.settings.group_id
        body = {"Id": self.session_id, "Name": default_session_name()}
        path = f"groups/{quote(gid, safe='')}/clientsessions"
        check(await self.pool.request("POST", path, json=body), f"Adding session to group {gid}")
        log.info("Added session %s to failover group %s.", self.session_id, gid)

    async def heartbeat(
        self,
        score: float,
        last_data_processed: int | None,
        held: tuple[ClientRole, int | None] | None = None,
    ) -> RoleAnswer:
        """``held``: the role this agent acts in and its epoch (HeldRole/HeldEpoch, protocol/
        heartbeat.py), extra properties that an AVEVA-compatible service ignores (spec §10)."""
        body: dict[str, Any] = {"FailoverScore": score}
        if last_data_processed is not None:
            body["LastDataProcessedTime"] = format_datetime(last_data_processed)
        if held is not None:
            body[HELD_ROLE] = held[0].name
            if held[1] is not None:
                body[HELD_EPOCH] = held[1]
        path = session_path(self.settings.group_id, self.session_id, "heartbeat")
        response = check(await self.pool.request("POST", path, json=body), "Heartbeat")
        try:
            return parse_role_answer(response.json())
        except ValueError as exc:
            raise Refused(f"Unable to deserialize failover message: {exc}") from exc

    async def poll_role(self, known: tuple[ClientRole, int | None] | None) -> RoleAnswer:
        """Wait on the service until the session's role differs from ``known`` (role, epoch)."""
        params = {"waitFor": f"{LONG_POLL_WAIT:g}"}
        if known is not None:
            role, epoch = known
            params["knownRole"] = role.name
            if epoch is not None:
                params["knownEpoch"] = str(epoch)
        path = session_path(self.settings.group_id, self.session_id, "role")
        timeout = LONG_POLL_WAIT + self.settings.request_timeout
        response = await self.pool.request("GET", path, params=params, timeout=timeout)
        check(response, "Role long-poll")
        try:
            return parse_role_answer(response.json())
        except ValueError as exc:
            raise Refused(f"Unexpected role answer: {exc}") from exc

    async def unregister(self) -> None:
        """Delete the session; a failure is logged, not raised (the agent is stopping)."""
        path = session_path(self.settings.group_id, self.session_id)
        try:
            response = await self.pool.request("DELETE", path)
        except EndpointError as exc:
            log.warning("Could not unregister session %s: %s", self.session_id, exc)
            return
        if response.is_success or response.status_code == 404:
            log.info("Unregistered session %s.", self.session_id)
        else:
            log.warning("Unregistering session %s: %s", self.session_id, response.status_code)


def _group_timeout(group: Any) -> float:
    text = group.get("FailoverTimeout") if isinstance(group, dict) else None
    try:
        return parse_timespan(text, "FailoverTimeout") / TICKS_PER_SECOND
    except Exception as exc:  # BadRequest from the parser: the body is not a group
        raise Refused(f"Unexpected group body: {group!r:.200}") from exc
