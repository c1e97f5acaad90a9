"""The dashboard's static files (docs/dashboard.md).

``/`` and ``/ui`` redirect to ``/ui/``; ``/ui/{asset}`` serves the HTML, CSS and JavaScript
shipped in ``cfs_cluster/ui/`` (no CDN: a plant network may be air-gapped). They are public
(auth.required_role): the files hold no data, and the login form must load before anyone has
logged in. Every one of them carries a Content-Security-Policy that allows this origin only.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cfs_cluster.api.requests import sent_path
from cfs_cluster.errors import NotFound

__all__ = ["ASSETS", "SECURITY_HEADERS", "router"]

router = APIRouter(tags=["dashboard"])

# No inline script or style anywhere in the page, so the policy can be this strict.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidated on every load, so a node upgraded in place serves its new page at once.
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str


def _load_assets() -> dict[str, Asset]:
    """Every file of ``cfs_cluster/ui`` by name, read once (the set is small and fixed)."""
    folder = resources.files("cfs_cluster") / "ui"
    assets = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            assets[entry.name] = Asset(entry.read_bytes(), _TYPES[suffix])
    return assets


ASSETS = _load_assets()


@router.get("/", include_in_schema=False)
async def root() -> Response:
    return RedirectResponse("ui/", status_code=307, headers=SECURITY_HEADERS)


@router.get("/ui", include_in_schema=False)
async def ui_index(request: Request) -> Response:
    # The front door ignores a trailing slash, so /ui and /ui/ both arrive here; only the path
    # as sent tells them apart. The page needs the slash: its relative URLs resolve against it.
    if not sent_path(request).endswith(b"/"):
        return RedirectResponse("ui/", status_code=307, headers=SECURITY_HEADERS)
    return _asset_response(ASSETS["index.html"])


@router.get("/ui/{asset}", include_in_schema=False)
async def ui_asset(asset: str) -> Response:
    found = ASSETS.get(asset)
    if found is None:
        raise NotFound(f"The dashboard has no file '{asset[:64]}'.")
    return _asset_response(found)


def _asset_response(asset: Asset) -> Response:
    return Response(asset.body, media_type=asset.media_type, headers=SECURITY_HEADERS)
