"""Operating a node: OMF health egress, Prometheus metrics, logging, backup format."""
