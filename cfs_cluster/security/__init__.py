"""Who may do what: users and roles, OAuth tokens, TLS certificates, heartbeat rate limits."""
