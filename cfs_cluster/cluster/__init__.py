"""The replicated node: Raft replication, leader-local liveness, the relay, membership, Node."""
