"""cfs_cluster: a highly available Client Failover Service on Raft (pysyncobj)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
