"""Route matching: the one canonical reading of a request path, for the front door and auth.

An authorization decision is only sound if it is made on the route that will run, so the path
is read once, here, and both the role check (``auth.required_role``) and the dispatch
(``api/frontdoor.py``) use the result:

- The path is the request line's bytes (ASGI ``raw_path``), split on ``/``; each segment is
  percent-decoded exactly once, as UTF-8. So ``%2F`` stays inside its segment (and is refused:
  no route has a slash in a segment), and ``%252F`` is the text ``%2F``, never decoded again.
- One trailing slash is allowed (spec §10). An empty segment (``//``), a dot segment (``.``,
  ``..``, also encoded), a malformed escape or bytes that are not UTF-8 match no route.
- Fixed parts of a template match ASCII case-insensitively and nothing else: a segment that
  is not ASCII can only fill a ``{parameter}``. ``ſ``, ``ı``, the Kelvin sign or a fullwidth
  letter never stand for an ASCII letter (Unicode case folding does exactly that).
- Parameters keep the spelling they were sent with.

A match names the template (which keys the role table) and the canonical path to hand on: the
template's own spelling of its fixed parts with the parameters filled in. No two templates may
match one path (checked when the table is built), so FastAPI, which matches that canonical path
case-sensitively in its own order, runs the same route.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

__all__ = ["Match", "Route", "RouteTable"]

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_PARAMETER = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")  # a str parameter; no {x:path}
_FIXED = re.compile(r"^[A-Za-z0-9._~-]+$")
_NOT_SEGMENTS = ("", ".", "..")


@dataclass(frozen=True)
class Route:
    """One path template and the methods it serves."""

    template: str
    methods: frozenset[str]
    spelling: tuple[str | None, ...]  # each segment: the fixed part as written, None = {param}

    @classmethod
    def parse(cls, template: str, methods: frozenset[str]) -> Route:
        if template == "/":
            return cls(template, methods, ())  # the root: no segments
        if not template.startswith("/") or template.endswith("/"):
            raise ValueError(f"Route {template}: must start and must not end with '/'.")
        spelling: list[str | None] = []
        for part in template[1:].split("/"):
            if _PARAMETER.match(part):
                spelling.append(None)
            elif _FIXED.match(part) and part not in _NOT_SEGMENTS:
                spelling.append(part)
            else:
                raise ValueError(f"Route {template}: {part!r} is neither a name nor {{param}}.")
        return cls(template, methods, tuple(spelling))

    @property
    def parameters(self) -> tuple[int, ...]:
        """The positions of the parameters among the segments."""
        return tuple(at for at, part in enumerate(self.spelling) if part is None)

    def overlaps(self, other: Route) -> bool:
        """Whether some path would match both."""
        if len(self.spelling) != len(other.spelling):
            return False
        return all(
            a is None or b is None or a.lower() == b.lower()
            for a, b in zip(self.spelling, other.spelling, strict=True)
        )

    def pattern(self) -> str:
        """A regex for the route's segments joined by '/', ASCII fixed parts in lower case."""
        return "/".join("[^/]+" if p is None else re.escape(p.lower()) for p in self.spelling)


class Match(NamedTuple):
    """A request path read as one route (a tuple: made on every request, heartbeats too)."""

    route: Route
    segments: tuple[str, ...]  # percent-decoded, as the request spelled them
    params: tuple[str, ...]

    @property
    def path(self) -> str:
        """The canonical path: the template's fixed parts, the request's parameters."""
        return "/" + "/".join(self._canonical())

    @property
    def raw_path(self) -> bytes:
        """``path`` percent-encoded, for the ASGI ``raw_path`` handed on with it."""
        return ("/" + "/".join(quote(s, safe="") for s in self._canonical())).encode("ascii")

    def _canonical(self) -> list[str]:
        return [fixed or s for s, fixed in zip(self.segments, self.route.spelling, strict=True)]


class RouteTable:
    """Every (method, path template) the app serves, and which route a request path names.

    ``first`` names the template tried first: a match costs one regex over the whole path, and
    the alternatives are tried in order (heartbeats are most requests)."""

    def __init__(self, routes: Iterable[tuple[str, str]], first: str | None = None) -> None:
        methods: dict[str, set[str]] = {}
        for method, template in routes:
            methods.setdefault(template, set()).add(method)
        parsed = [Route.parse(t, frozenset(m)) for t, m in methods.items()]
        self.routes = sorted(parsed, key=lambda route: route.template != first)
        for n, route in enumerate(self.routes):
            for other in self.routes[:n]:
                if route.overlaps(other):
                    raise ValueError(f"Routes {route.template} and {other.template} overlap.")
        self._parameters = [route.parameters for route in self.routes]
        # One alternative per route, each its own group, so ``lastindex`` names the route. No
        # two routes overlap: the order of the alternatives changes the cost, not the answer.
        self._pattern = re.compile("|".join(f"({route.pattern()})" for route in self.routes))

    def route(self, template: str) -> Route:
        for route in self.routes:
            if route.template == template:
                return route
        raise KeyError(f"No route {template}.")

    def match(self, raw_path: bytes) -> Match | None:
        """The route ``raw_path`` names, or None if it names none (for any method)."""
        read = _read(raw_path)
        if read is None:
            return None
        segments, folded = read
        found = self._pattern.fullmatch(folded)
        if found is None or found.lastindex is None:
            return None
        index = found.lastindex - 1
        params = tuple([segments[at] for at in self._parameters[index]])
        return Match(self.routes[index], segments, params)


def _read(raw_path: bytes) -> tuple[tuple[str, ...], str] | None:
    """The decoded segments of a path and the same joined by '/' with ASCII ones in lower
    case; None if the path cannot be the spelling of any route."""
    if not raw_path.startswith(b"/"):
        return None
    if raw_path == b"/":
        return (), ""  # the root
    if raw_path.endswith(b"/"):
        raw_path = raw_path[:-1]  # the one optional trailing slash
    if b"%" in raw_path or not raw_path.isascii():
        segments = _decoded_segments(raw_path[1:].split(b"/"))
        if segments is None:
            return None
        # Only ASCII is folded: the Kelvin sign lowers to "k", so a segment with anything
        # else stays as sent, and can only fill a parameter.
        return segments, "/".join([s.lower() if s.isascii() else s for s in segments])
    text = raw_path[1:].decode("ascii")  # the common case: one split, one lower()
    segments = tuple(text.split("/"))
    if "" in segments or "." in segments or ".." in segments:
        return None
    return segments, text.lower()


def _decoded_segments(parts: list[bytes]) -> tuple[str, ...] | None:
    """Each part percent-decoded once, as UTF-8; None if one is malformed or not a segment."""
    segments = []
    for part in parts:
        if _BAD_ESCAPE.search(part):
            return None
        try:
            segment = unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if segment in _NOT_SEGMENTS or "/" in segment:  # %2F: no route has a slash in a segment
            return None
        segments.append(segment)
    return tuple(segments)
