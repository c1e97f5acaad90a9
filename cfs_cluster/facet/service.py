"""The facet's verbs over the one configuration: validate, apply at runtime, then persist.

Each change is computed purely (model.py) from the current configuration and the request body,
then made effective by the runtime and only then saved, under one lock so two requests cannot
interleave. A body the runtime refuses changes nothing, neither the agent nor the file.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from cfs_cluster.errors import BadRequest, Conflict, NotFound
from cfs_cluster.facet.failoverstate import FailoverState
from cfs_cluster.facet.healthendpoints import (
    health_json,
    parse_health_endpoint,
    parse_health_endpoints,
    unmask_health,
)
from cfs_cluster.facet.model import (
    ClientFailoverConfig,
    merge_patch,
    parse_config,
    single_entry,
    unmask,
)
from cfs_cluster.facet.runtime import FailoverRuntime
from cfs_cluster.facet.store import ConfigStore

if TYPE_CHECKING:
    from cfs_cluster.agent.health import FailoverHealth, HealthEndpointSettings

__all__ = ["ClientFailoverFacet"]

log = logging.getLogger("cfs.facet")


class ClientFailoverFacet:
    """The ClientFailover facet of component System (seed 002): at most one configuration.

    Args:
        runtime: applies configuration changes (``AgentRuntime``, or a fake in tests).
        store: where the configuration survives restarts; None keeps it in memory only.
        health: where failover health goes (spec §5.9); the HealthEndpoints facet configures
            its OMF endpoints. None: the endpoints are kept but nothing is sent.
    """

    def __init__(
        self,
        runtime: FailoverRuntime,
        store: ConfigStore | None = None,
        *,
        health: FailoverHealth | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.health = health
        self._config: ClientFailoverConfig | None = None
        self._endpoints: tuple[HealthEndpointSettings, ...] = ()
        self._lock = asyncio.Lock()

    @property
    def config(self) -> ClientFailoverConfig | None:
        return self._config

    async def start(self) -> None:
        """Load the stored configuration and make it effective (adapter start-up)."""
        stored = self.store.load() if self.store is not None else None
        endpoints = parse_health_endpoints(self.store.load_health()) if self.store else ()
        async with self._lock:
            self._set_endpoints(endpoints)
            if self.health is not None:
                self.health.start()
            log.info("Client failover at start-up: %s.", await self.runtime.apply(stored))
            self._config = stored

    async def stop(self) -> None:
        """Adapter shutdown: stop failover (the runtime unregisters), then say Shutdown on
        the health endpoints; the files stay."""
        await self.runtime.close()
        if self.health is not None:
            await self.health.stop()

    def state(self) -> FailoverState:
        return self.runtime.state()

    # ----------------------------------------------------------------------- reads

    def get(self, config_id: str) -> ClientFailoverConfig:
        """The configuration with this Id (any casing), else NotFound."""
        config = self._config
        if config is None or config.id.lower() != config_id.lower():
            raise NotFound(
                f"Client failover configuration '{config_id[:64]}' was not found.",
                resolution="GET api/v1/configuration/System/ClientFailover lists the one there is.",
            )
        return config

    # ----------------------------------------------------------------------- changes

    async def create(self, body: Any) -> ClientFailoverConfig:
        """POST: add the configuration; 409 if there already is one."""
        config = parse_config(single_entry(body))
        async with self._lock:
            if self._config is not None:
                raise Conflict(
                    f"A client failover configuration ('{self._config.id}') already exists; "
                    "only one is allowed.",
                    resolution="Use PUT to replace it, or DELETE it first.",
                )
            return await self._commit(unmask(config, None))

    async def replace(self, body: Any) -> ClientFailoverConfig:
        """PUT on the collection: replace the configuration, or create it if there is none."""
        entry = single_entry(body)
        async with self._lock:
            current = self._config
            config = parse_config(entry, default_id=current.id if current else None)
            return await self._commit(unmask(config, current))

    async def replace_by_id(self, config_id: str, body: Any) -> ClientFailoverConfig:
        """PUT on ``{id}``: replace it; 404 if it does not exist."""
        entry = single_entry(body)
        async with self._lock:
            current = self.get(config_id)
            config = parse_config(entry, default_id=current.id)
            if config.id.lower() != current.id.lower():
                raise BadRequest(
                    f"The body's Id '{config.id[:64]}' differs from the URL's '{config_id[:64]}'.",
                    parameters={"Id": config.id[:64]},
                )
            return await self._commit(unmask(config, current))

    async def patch(self, config_id: str | None, body: Any) -> ClientFailoverConfig:
        """PATCH: merge the given properties into the configuration (``None``: the one there is)."""
        async with self._lock:
            current = self.get(config_id) if config_id is not None else self._only()
            return await self._commit(merge_patch(current, body))

    async def delete(self, config_id: str | None) -> None:
        """DELETE: unregister and run without failover. The collection form is idempotent."""
        async with self._lock:
            if config_id is not None:
                self.get(config_id)
            await self._set(None)

    # ----------------------------------------------------------------- health endpoints

    @property
    def health_endpoints(self) -> tuple[HealthEndpointSettings, ...]:
        return self._endpoints

    def health_endpoint(self, endpoint_id: str) -> HealthEndpointSettings:
        for endpoint in self._endpoints:
            if endpoint.id.lower() == endpoint_id.lower():
                return endpoint
        raise NotFound(
            f"Health endpoint '{endpoint_id[:64]}' was not found.",
            resolution="GET api/v1/configuration/System/HealthEndpoints lists them.",
        )

    async def add_health_endpoints(self, body: Any) -> tuple[HealthEndpointSettings, ...]:
        """POST: add one endpoint or an array; 409 when an Id exists already."""
        added = tuple(unmask_health(e, None) for e in parse_health_endpoints(body))
        async with self._lock:
            known = {e.id.lower() for e in self._endpoints}
            for endpoint in added:
                if endpoint.id.lower() in known:
                    raise Conflict(
                        f"Health endpoint '{endpoint.id[:64]}' already exists.",
                        resolution="Use PUT to replace it, or DELETE it first.",
                    )
            self._save_endpoints(parse_health_endpoints([*self._json(), *_docs(added)]))
        return added

    async def replace_health_endpoints(self, body: Any) -> tuple[HealthEndpointSettings, ...]:
        """PUT on the collection: the endpoints are exactly these."""
        async with self._lock:
            parsed = parse_health_endpoints(body)
            endpoints = tuple(unmask_health(e, self._stored(e.id)) for e in parsed)
            self._save_endpoints(endpoints)
            return endpoints

    async def replace_health_endpoint(self, endpoint_id: str, body: Any) -> HealthEndpointSettings:
        """PUT on ``{id}``: replace that endpoint; 404 if it does not exist."""
        async with self._lock:
            current = self.health_endpoint(endpoint_id)
            endpoint = unmask_health(parse_health_endpoint(body, default_id=current.id), current)
            if endpoint.id.lower() != current.id.lower():
                raise BadRequest(
                    f"The body's Id '{endpoint.id[:64]}' differs from the URL's "
                    f"'{endpoint_id[:64]}'.",
                    parameters={"Id": endpoint.id[:64]},
                )
            self._save_endpoints(tuple(endpoint if e is current else e for e in self._endpoints))
            return endpoint

    async def delete_health_endpoints(self, endpoint_id: str | None) -> None:
        """DELETE one (404 if absent) or, without an Id, all of them."""
        async with self._lock:
            if endpoint_id is None:
                self._save_endpoints(())
                return
            gone = self.health_endpoint(endpoint_id)
            self._save_endpoints(tuple(e for e in self._endpoints if e is not gone))

    def _stored(self, endpoint_id: str) -> HealthEndpointSettings | None:
        try:
            return self.health_endpoint(endpoint_id)
        except NotFound:
            return None

    def _json(self) -> list[dict[str, Any]]:
        return _docs(self._endpoints)

    def _save_endpoints(self, endpoints: tuple[HealthEndpointSettings, ...]) -> None:
        if self.store is not None:
            self.store.save_health(_docs(endpoints))
        self._set_endpoints(endpoints)

    def _set_endpoints(self, endpoints: tuple[HealthEndpointSettings, ...]) -> None:
        self._endpoints = endpoints
        if self.health is not None:
            self.health.set_endpoints(endpoints)

    def _only(self) -> ClientFailoverConfig:
        if self._config is None:
            raise NotFound(
                "There is no client failover configuration.",
                resolution="Create one with POST or PUT.",
            )
        return self._config

    async def _commit(self, config: ClientFailoverConfig) -> ClientFailoverConfig:
        await self._set(config)
        return config

    async def _set(self, config: ClientFailoverConfig | None) -> None:
        """Apply at runtime, then persist; the caller holds the lock."""
        if config == self._config:
            return
        done = await self.runtime.apply(config)
        self._config = config
        if self.store is not None:
            self.store.save(config)
        if config is None:
            log.info("Client failover configuration deleted: %s.", done)
        else:
            log.info("Client failover configuration %r applied: %s.", config, done)


def _docs(endpoints: tuple[HealthEndpointSettings, ...]) -> list[dict[str, Any]]:
    return [health_json(e, masked=False) for e in endpoints]
