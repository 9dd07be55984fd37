"""The apps, served by the server itself: the operator console, the shop, courier and resident apps, as
static files shipped inside the package (`dispatch/web`): HTML pages and ES modules, no build step, nothing
fetched from elsewhere at run time (the content security policy allows this origin only).

Each file is a route of its own, read once at import: no path is built from a request, so nothing outside
the folder can be served. The pages need neither PostgreSQL nor Redis (they load while the server starts,
and their scripts wait for it).
"""

from __future__ import annotations

import re
from importlib.resources import files

from aiohttp import web

from dispatch.api.routing import Handler, RouteTable

routes = RouteTable("apps")

WEB = files("dispatch") / "web"
PAGES = {
    "/": ("index.html", "The apps: how to sign in to each"),
    "/console": ("console.html", "The operator console (admin): live map, orders, fleet, rounds"),
    "/admin": ("console.html", "The operator console (another name)"),
    "/map": ("console.html", "The operator console (another name)"),
    "/shop": ("shop.html", "The shop app: offers, preparation, hand-over, stock"),
    "/courier": ("courier.html", "The courier app: shift, location, routes and stops"),
    "/order": ("order.html", "The resident app: order from the shops around a point, follow it"),
}
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
# Same origin only: no CDN, no tile server, no inline script. The websocket is this origin's too.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
PATHS: set[str] = set()  # every path served here (they need no dependency)


def _serve(path: str, name: str, body: bytes, summary: str) -> None:
    content_type = TYPES[name[name.rindex(".") :]]

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=HEADERS)

    handler.__name__ = "app_" + (re.sub(r"\W", "_", path.strip("/")) or "index")
    register: Handler = handler
    routes.route("GET", path, summary=summary, content_type=content_type)(register)
    PATHS.add(path)


for _path, (_name, _summary) in PAGES.items():
    _serve(_path, _name, (WEB / _name).read_bytes(), _summary)
for _file in sorted((WEB / "static").iterdir(), key=lambda f: f.name):
    if _file.name[_file.name.rfind(".") :] in TYPES:
        _serve(f"/static/{_file.name}", _file.name, _file.read_bytes(), f"The apps' file {_file.name}")
