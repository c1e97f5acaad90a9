"""The HTTP API: thin routers over the node's replication and liveness services."""

from cfs_cluster.api.app import create_app

__all__ = ["create_app"]
