"""The adapter side's ClientFailover configuration facet and FailoverState (seed 002; spec §5).

Embed it in an adapter's FastAPI app::

    facet = ClientFailoverFacet(AgentRuntime(score=my_score), ConfigStore(Path("config")))
    app.include_router(create_router(facet))
    # in the lifespan: await facet.start() ... await facet.stop()

or run it alone with ``cfs facet --port 5590 --data-dir ./facet-data``.
"""

from cfs_cluster.facet.failoverstate import FailoverState
from cfs_cluster.facet.model import ClientFailoverConfig, parse_config
from cfs_cluster.facet.router import create_router
from cfs_cluster.facet.runtime import AgentRuntime, FailoverRuntime
from cfs_cluster.facet.service import ClientFailoverFacet
from cfs_cluster.facet.store import ConfigStore

__all__ = [
    "AgentRuntime",
    "ClientFailoverConfig",
    "ClientFailoverFacet",
    "ConfigStore",
    "FailoverRuntime",
    "FailoverState",
    "create_router",
    "parse_config",
]
