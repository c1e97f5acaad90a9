"""The adapter side of client failover: an asyncio agent any Python collector can embed.

See docs/adapters.md. ``FailoverAgent`` joins a failover group and keeps the role current;
``HotBuffer`` is the hot-mode buffer logic; ``AgentSettings`` configures both.
"""

from cfs_cluster.agent.agent import FailoverAgent
from cfs_cluster.agent.grant import RoleChange
from cfs_cluster.agent.hotbuffer import HotBuffer
from cfs_cluster.agent.settings import AgentSettings
from cfs_cluster.agent.status import AgentState
from cfs_cluster.protocol.wire import ClientRole

__all__ = ["AgentSettings", "AgentState", "ClientRole", "FailoverAgent", "HotBuffer", "RoleChange"]
