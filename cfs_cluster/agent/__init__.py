"""The adapter side of client failover: an asyncio agent any Python collector can embed.

See docs/adapters.md. ``FailoverAgent`` joins a failover group and keeps the role current;
``HotBuffer`` is the hot-mode buffer logic; ``AgentSettings`` configures both.
"""

from ..wire import ClientRole
from .agent import FailoverAgent
from .grant import RoleChange
from .hotbuffer import HotBuffer
from .settings import AgentSettings

__all__ = ["AgentSettings", "ClientRole", "FailoverAgent", "HotBuffer", "RoleChange"]
