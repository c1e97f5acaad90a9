"""The HTTP stack's ceiling: a raw ASGI app answering every request with the heartbeat JSON.

It reads the body like the real heartbeat path does, but does no routing, parsing or state.
Run under uvicorn with uvloop + httptools, exactly like ``cfs serve``.
"""

from __future__ import annotations

from typing import Any

BODY = b'{"Role":1,"LastDataProcessedTime":"0001-01-01T00:00:00","Epoch":1,"ValidFor":"00:00:14.9850000"}'
HEADERS = [(b"content-type", b"application/json; charset=utf-8")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
