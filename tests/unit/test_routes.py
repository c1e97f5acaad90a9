"""api/routes.py: the one reading of a request path as a route (issue 11).

The whole app's routes, every caller and many spellings are in tests/test_authorization.py;
these are the reader's own rules, on a small table.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from support.nodes import settings_for

from cfs_cluster.api.app import create_app, served_routes
from cfs_cluster.api.frontdoor import FrontDoor
from cfs_cluster.api.routes import RouteTable
from cfs_cluster.cluster.node import Node

TABLE = RouteTable(
    [("GET", "/api/v1/users"), ("PUT", "/api/v1/users/{name}"), ("GET", "/a/{x}/b")]
    + [("GET", "/a/c/d"), ("GET", "/api/v1/configuration/healthEndpoints")]
)


@pytest.mark.parametrize(
    ("raw", "template", "path", "params"),
    [
        (b"/API/V1/Users/", "/api/v1/users", "/api/v1/users", ()),
        (b"/api/v1/u%73ers", "/api/v1/users", "/api/v1/users", ()),  # decoded: it is "users"
        (
            b"/api/v1/users/R%C3%B6ot",
            "/api/v1/users/{name}",
            "/api/v1/users/R\u00f6ot",
            ("R\u00f6ot",),
        ),
        (b"/api/v1/users/a%252Fb", "/api/v1/users/{name}", "/api/v1/users/a%2Fb", ("a%2Fb",)),
        (
            b"/api/v1/users/\xe2\x84\xaa",
            "/api/v1/users/{name}",
            "/api/v1/users/\u212a",
            ("\u212a",),
        ),
        (b"/a/C/b", "/a/{x}/b", "/a/C/b", ("C",)),  # another route's name fills a parameter
        (b"/A/c/D", "/a/c/d", "/a/c/d", ()),
        (
            b"/API/v1/CONFIGURATION/healthendpoints",
            "/api/v1/configuration/healthEndpoints",
            "/api/v1/configuration/healthEndpoints",
            (),
        ),
    ],
)
def test_a_path_reads_as_one_route(
    raw: bytes, template: str, path: str, params: tuple[str, ...]
) -> None:
    match = TABLE.match(raw)
    assert match is not None
    assert (match.route.template, match.path, match.params) == (template, path, params)
    assert unquote(match.raw_path.decode()) == path


@pytest.mark.parametrize(
    "raw",
    [
        b"/api/v1/u%C5%BFers",  # ſ
        b"/api/v1/u\xc5\xbfers",  # the same, unencoded
        b"/api/v1/%E2%84%AAsers",  # Kelvin sign, which lower() turns into k
        b"/api/v1/users/a%2Fb",
        b"/api/v1%2Fusers",
        b"/api/v1//users",
        b"/api/v1/users//",
        b"//api/v1/users",
        b"/api/v1/./users",
        b"/api/v1/x/../users",
        b"/api/v1/users/%2e%2e",
        b"/api/v1/users/.",
        b"/api/v1/users/%zz",
        b"/api/v1/users/%",
        b"/api/v1/users/%FF",
        b"/api/v1/users;x",
        b"api/v1/users",
        b"",
        b"/",
        b"*",
    ],
)
def test_a_path_that_is_no_route_spelling(raw: bytes) -> None:
    assert TABLE.match(raw) is None


@pytest.mark.parametrize(
    "routes",
    [
        [("GET", "/a/{x}"), ("DELETE", "/a/b")],  # /a/b would match both
        [("GET", "/files/{name:path}")],  # a converter FastAPI would match differently
        [("GET", "/a/b{x}")],
        [("GET", "/a/")],
        [("GET", "/a/../b")],
    ],
)
def test_a_table_a_path_could_not_be_read_against_is_refused(routes: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        RouteTable(routes)


def test_a_route_without_a_row_stops_the_node(tmp_path: Path) -> None:
    front = create_app(Node(settings_for(tmp_path)))
    assert isinstance(front, FrontDoor)

    async def undecided() -> dict[str, str]:
        return {}

    front.app.add_api_route("/api/v1/new", undecided, methods=["GET"])
    with pytest.raises(RuntimeError, match=re.escape("no row for [('GET', '/api/v1/new')]")):
        served_routes(front.app)
