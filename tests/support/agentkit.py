"""Our agent (cfs_cluster/agent/) against a real cluster, with every heartbeat it sends recorded
into a tests/support/history.py ``History``, so the checker judges the shipped agent too.

The recording sits in the agent's HTTP transport: each heartbeat attempt, to whichever node
the agent's endpoint pool tries, becomes one ``Record`` with the agent's own send and receive
times (the agent's clock is the event loop's, ``time.monotonic``). Nothing is faked: the
requests go to the nodes over real sockets.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import httpx

from cfs_cluster.agent import AgentSettings, FailoverAgent, RoleChange
from cfs_cluster.agent.service import FailoverService
from cfs_cluster.agent.transport import EndpointPool
from cfs_cluster.protocol.wire import TICKS_PER_SECOND, parse_timespan
from support.history import History, Record

API = "/api/v1/clientfailover"


class RecordingTransport(httpx.AsyncBaseTransport):
    """Records heartbeat requests and their answers (or failures) into ``history``."""

    def __init__(self, history: History, group: str, session: str, could_carry: float) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._history = history
        self._group, self._session = group, session
        self._carry = could_carry

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/heartbeat"):
            return await self._inner.handle_async_request(request)
        url = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        sent = time.monotonic()
        try:
            response = await self._inner.handle_async_request(request)
            await response.aread()
        except httpx.TimeoutException as exc:
            self._add(url, sent, None, error=repr(exc), indeterminate=True)
            raise
        except httpx.HTTPError as exc:
            self._add(url, sent, None, error=repr(exc))
            raise
        if response.status_code != 200:
            self._add(url, sent, response.status_code, error=response.text[:300])
            return response
        answer = response.json()
        valid = parse_timespan(answer["ValidFor"], "ValidFor") / TICKS_PER_SECOND
        self._add(url, sent, 200, role=int(answer["Role"]), epoch=int(answer["Epoch"]), valid=valid)
        return response

    def _add(
        self,
        url: str,
        sent: float,
        status: int | None,
        *,
        role: int | None = None,
        epoch: int | None = None,
        valid: float | None = None,
        error: str | None = None,
        indeterminate: bool = False,
    ) -> None:
        self._history.add(
            Record(
                self._group, self._session, url, sent, time.monotonic(), status,
                role=role, epoch=epoch, valid_for=valid, error=error,
                could_carry=self._carry, indeterminate=indeterminate,
            )
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._inner.aclose()


class RecordedAgent(FailoverAgent):
    """A FailoverAgent whose heartbeats are recorded (no credentials: dev clusters)."""

    def __init__(self, settings: AgentSettings, history: History) -> None:
        self.changes: list[tuple[float, RoleChange]] = []
        super().__init__(settings, on_role_change=self._note)
        self._history = history

    def _note(self, change: RoleChange) -> None:
        self.changes.append((time.monotonic(), change))

    def _connect(self, settings: AgentSettings) -> tuple[httpx.AsyncClient, FailoverService]:
        carry = 0.999 * settings.failover_timeout
        transport = RecordingTransport(
            self._history, settings.group_id, self.session_id, could_carry=carry
        )
        client = httpx.AsyncClient(timeout=settings.request_timeout, transport=transport)
        pool = EndpointPool(settings.endpoints, client)
        return client, FailoverService(pool, settings, self.session_id)


def endpoints(urls: Iterable[str], first: int = 0) -> tuple[str, ...]:
    """The failover endpoints of ``urls``, starting with the ``first``-th."""
    roots = [u + API for u in urls]
    return tuple(roots[first:] + roots[:first])
