"""The web page: upload an image, write the edit, watch it run, scrub the path and pick the frame to keep.

Routes (open like `/healthz`: the page holds no data, every `/v1` call it
makes carries the token typed in):

- `GET /`: `web/index.html`.
- `GET /web/app.js`, `GET /web/style.css`: its script and style sheet.

Rules:

- The files ship inside the package (`f2f/serving/api/web/`, package data) and
  are read once, when this module is imported; only these three names are
  served, so no request path ever reaches the file system.
- Nothing is loaded from elsewhere: no CDN, no web fonts, no external
  script (air-gapped installs). The Content-Security-Policy header says so
  to the browser: scripts, styles and connections from this origin only,
  images also from `blob:` (the page fetches outputs with the bearer token
  and shows them as blobs).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

PAGES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CSP = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


def _read(name: str) -> bytes:
    return resources.files("f2f.serving.api").joinpath("web", name).read_bytes()


def _page(name: str, body: bytes) -> Any:
    async def page() -> Response:
        headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response(body, media_type=PAGES[name], headers=headers)

    return page


router = APIRouter(include_in_schema=False)
router.add_api_route("/", _page("index.html", _read("index.html")), methods=["GET"], name="web_page")
for _name in ("app.js", "style.css"):
    router.add_api_route(f"/web/{_name}", _page(_name, _read(_name)), methods=["GET"], name=f"web_{_name}")
