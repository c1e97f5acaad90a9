"""One cluster node: replication + liveness + relay, with explicit start and stop phases."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from . import engine
from .errors import CfsError, Conflict, NotFound, Unavailable
from .forwarding import Relay, relay_token
from .liveness import Coordinator, HeartbeatAnswer, HeartbeatReport
from .replication import Replicator
from .settings import Settings

__all__ = ["Node"]

log = logging.getLogger("cfs.node")


class Node:
    """The services the API calls. Construct anywhere; ``start()`` on the main thread's loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.coordinator: Coordinator
        self.replicator = Replicator(
            self_address=settings.raft_address,
            peers=settings.peers,
            data_dir=settings.data_dir,
            timing=settings.raft,
            password=settings.raft_password,
            on_applied=self._on_applied,
            on_state_changed=self._on_raft_state,
        )
        self.coordinator = Coordinator(
            self.replicator, settings.failover, settings.raft, settings.request_timeout
        )
        self.relay_token = relay_token(settings.raft_password)
        self.relay = Relay(
            self.replicator, self.relay_token, settings.failover.relay_linger, settings.request_timeout
        )
        self._publish_task: asyncio.Task[None] | None = None

    def _on_applied(self, command: engine.Command, result: engine.Result) -> None:
        self.coordinator.on_applied(command, result)

    def _on_raft_state(self, old: str, new: str) -> None:
        log.info("Raft state of %s: %s -> %s", self.settings.node_id, old, new)
        self.coordinator.on_raft_state(old, new)

    async def start(self) -> None:
        self.coordinator.start()
        self.replicator.start()
        self._publish_task = asyncio.create_task(self._publish_member())

    async def stop(self) -> None:
        """Hand leadership over first, so a planned stop costs no election timeout."""
        if self._publish_task is not None:
            self._publish_task.cancel()
        if self.replicator.is_leader():
            await self.coordinator.stop()
            self.replicator.transfer_leadership()
            for _ in range(50):  # bounded: 1 s
                await asyncio.sleep(0.02)
                if not self.replicator.is_leader():
                    break
        else:
            await self.coordinator.stop()
        await self.relay.close()
        self.replicator.destroy()

    async def _publish_member(self) -> None:
        """Publish this node's API URL in the replicated member table (for relays and /cluster)."""
        s = self.settings
        command = engine.RegisterMember(
            request_id=f"member:{s.node_id}:{s.raft_address}:{s.api_url}:{uuid.uuid4().hex}",
            node_id=s.node_id,
            raft=s.raft_address,
            api_url=s.api_url,
        )
        while True:
            member = self.replicator.state.members.get(s.node_id)
            if member is not None and member.api_url == s.api_url and member.raft == s.raft_address:
                return
            try:
                await self.replicator.submit(command, 2.0)
            except CfsError:
                await asyncio.sleep(0.2)

    # ----------------------------------------------------------------- services

    async def submit(self, command: engine.Command) -> engine.Result:
        result = await self.replicator.submit(command, self.settings.request_timeout)
        if result.code == engine.Code.GROUP_NOT_FOUND:
            raise NotFound(f"Failover group '{getattr(command, 'group_id', '')}' was not found.")
        if result.code == engine.Code.SESSION_NOT_FOUND:
            raise NotFound(f"Client session '{getattr(command, 'session_id', '')}' was not found.")
        if result.code == engine.Code.CONFLICT:
            raise Conflict(result.detail)
        if result.code == engine.Code.INVALID:
            log.error("Command %s was refused by the state machine: %s", command, result.detail)
            raise Unavailable("The request could not be applied.", retry_after=1)
        return result

    async def heartbeat(self, report: HeartbeatReport) -> HeartbeatAnswer:
        if self.coordinator.can_decide():
            return await self.coordinator.heartbeat(report)
        return await self.relay.heartbeat(report)

    def is_ready(self) -> tuple[bool, str]:
        """Ready = a leader is known, this node is caught up with it, and its API is published."""
        status = self.replicator.raw_status()
        if not status:
            return False, "replication not started"
        if status.get("leader") is None:
            return False, "no leader known"
        if self.replicator.is_leader() and not self.replicator.has_lease():
            return False, "leader without a current majority"
        commit, applied = status.get("commit_idx", 0), status.get("last_applied", 0)
        if applied < commit:
            return False, f"catching up (applied {applied} of {commit})"
        if self.settings.node_id not in self.replicator.state.members:
            return False, "member address not yet published"
        return True, "ready"
