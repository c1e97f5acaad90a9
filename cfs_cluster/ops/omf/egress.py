"""The egress task: what each node sends to every configured health endpoint, once per interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cfs_cluster.engine.configuration import HealthEndpoint
from cfs_cluster.ops.metrics import Metrics
from cfs_cluster.ops.omf.diagnostics import collect_diagnostics
from cfs_cluster.ops.omf.messages import (
    DeviceStatus,
    Message,
    Names,
    build_setup,
    count_data,
    node_data,
)
from cfs_cluster.ops.omf.sender import EndpointSender

log = logging.getLogger("cfs.omf")


@dataclass(frozen=True)
class HealthSource:
    """What the egress reads from its node (callables: no import of node.py here)."""

    node_id: str
    cluster_name: str
    endpoints: Callable[[], tuple[HealthEndpoint, ...]]
    counts: Callable[[], tuple[int, int]]  # (groups, sessions)
    is_leader: Callable[[], bool]
    is_ready: Callable[[], bool]


class HealthEgress:
    """Every ``interval`` seconds (wall-clock slots), enqueue this node's data and flush."""

    def __init__(
        self,
        source: HealthSource,
        interval: float,
        metrics: Metrics | None,
        started_at: float,
        data_dir: Path,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._clock = clock
        self.interval = interval
        self.names = Names(source.node_id, source.cluster_name)
        self._metrics = metrics
        self._started_at = started_at
        self._data_dir = data_dir
        self._wall = wall
        self.senders: dict[str, EndpointSender] = {}
        self._slot: int | None = None
        self._count_slot: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cfs-omf-egress")

    async def stop(self) -> None:
        """Cancel the loop, then tell each endpoint (briefly) that this node is shutting down."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):  # best effort, bounded: the node is stopping
            await asyncio.wait_for(self._send_shutdown(), 2.0)
        for sender in self.senders.values():
            await sender.close()
        self.senders.clear()

    async def _run(self) -> None:
        tick = max(0.05, min(1.0, self.interval / 4))
        while True:
            try:
                await self.cycle()
            except Exception:  # egress must never take the node down
                log.exception("Health egress cycle failed")
            await asyncio.sleep(tick)

    async def cycle(self) -> None:
        """One pass: follow the endpoint configuration, enqueue new data, flush every endpoint."""
        self._reconcile(self.source.endpoints())
        if not self.senders:
            return
        now = self._wall()
        slot = math.floor(now / self.interval)
        if slot != self._slot:
            self._slot = slot
            status = DeviceStatus.Good if self.source.is_ready() else DeviceStatus.DeviceInError
            diagnostics = await asyncio.to_thread(
                collect_diagnostics, self._started_at, self._data_dir
            )
            self._enqueue(node_data(self.names, now, self.interval, status, diagnostics))
        # Leader only, once per slot; a newly elected leader sends the current slot at once.
        if self.source.is_leader() and self._count_slot != slot:
            self._count_slot = slot
            groups, sessions = self.source.counts()
            self._enqueue(count_data(self.names, slot * self.interval, groups, sessions))
        await asyncio.gather(*(s.flush() for s in self.senders.values()))

    def _enqueue(self, message: Message) -> None:
        for sender in self.senders.values():
            sender.enqueue(message)

    def _reconcile(self, endpoints: tuple[HealthEndpoint, ...]) -> None:
        wanted = {e.id: e for e in endpoints}
        for endpoint_id in list(self.senders):
            sender = self.senders[endpoint_id]
            if wanted.get(endpoint_id) != sender.endpoint:
                del self.senders[endpoint_id]
                task = asyncio.create_task(sender.close())
                self._closing.add(task)  # keep a reference until it ran
                task.add_done_callback(self._closing.discard)
        for endpoint_id, endpoint in wanted.items():
            if endpoint_id not in self.senders:
                log.info("Health endpoint '%s': sending OMF to %s.", endpoint_id, endpoint.endpoint)
                self.senders[endpoint_id] = EndpointSender(
                    endpoint, build_setup(self.names), self._metrics, self._clock
                )

    async def _send_shutdown(self) -> None:
        now = self._wall()
        message = node_data(self.names, now, self.interval, DeviceStatus.Shutdown, {})
        # Shutdown carries status only: the diagnostics stream gets no empty value.
        message = Message(message.message_type, message.action, message.body[1:])
        self._enqueue(message)
        await asyncio.gather(*(s.flush() for s in self.senders.values()))
