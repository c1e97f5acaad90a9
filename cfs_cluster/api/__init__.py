"""The HTTP API: routers over the node, the front door, the server runner.

``app.create_app`` builds the node's application and ``server.run`` serves it; this package
imports neither, so ``api.errors`` (shared with the facet) loads no node.
"""
