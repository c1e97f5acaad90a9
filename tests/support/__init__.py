"""Test support: real clusters, network namespaces, heartbeat histories, an OMF receiver, harnesses."""
