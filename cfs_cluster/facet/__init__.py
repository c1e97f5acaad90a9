"""The adapter side's ClientFailover configuration facet and FailoverState (seed 002; spec §5).

Embed it in an adapter's FastAPI app::

    facet = ClientFailoverFacet(AgentRuntime(score=my_score), ConfigStore(Path("config")))
    app.include_router(create_router(facet))
    # in the lifespan: await facet.start() ... await facet.stop()

or run it alone with ``cfs facet --port 5590 --data-dir ./facet-data``.
"""

from .model import ClientFailoverConfig, parse_config
from .router import create_router
from .runtime import AgentRuntime, FailoverRuntime, FailoverState
from .service import ClientFailoverFacet
from .store import ConfigStore

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
