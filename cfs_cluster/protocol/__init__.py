"""What both sides of the wire share: text formats, heartbeat report and answer, error bodies.

The agent and the facet import only this package, `errors`, `validators` and their own
settings, so an adapter that embeds them loads none of the server.
"""
