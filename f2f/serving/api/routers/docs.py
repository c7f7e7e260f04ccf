"""`GET /docs`: Swagger UI from this server's own files, with the web page's Content-Security-Policy.

Off by default (the app arg `docs`, `f2f.serving.deployments.ingress_args`): FastAPI's own
`/docs` and `/redoc` load their scripts from a CDN, so the ingress turns them
off, and `/openapi.json` is served either way. On, these routes serve:

- `GET /docs`: `web/docs.html`; `GET /docs/init.js`: `web/docs.js`, which
  starts Swagger UI on `openapi.json` (relative: a route prefix is kept);
- `GET /docs/swagger-ui-bundle.js`, `GET /docs/swagger-ui.css`: Swagger UI's
  files from the `docs` extra (`fastapi-offline`'s package data).

Rules: the files are read once, when the router is built; only these four
names are served; nothing is loaded from elsewhere (the policy allows this
origin only, plus `data:` and `blob:` images), as for the page at `/`.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from f2f.errors import InvalidConfig
from f2f.serving.api.routers.web import CSP
from f2f.serving.deployments.ingress_args import DOCS_EXTRA, DOCS_PACKAGE

FILES = {  # route under /docs -> (package, file, media type)
    "": ("f2f.serving.api", "web/docs.html", "text/html; charset=utf-8"),
    "/init.js": ("f2f.serving.api", "web/docs.js", "text/javascript; charset=utf-8"),
    "/swagger-ui-bundle.js": (DOCS_PACKAGE, "static/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "/swagger-ui.css": (DOCS_PACKAGE, "static/swagger-ui.css", "text/css; charset=utf-8"),
}


def docs_router() -> APIRouter:
    """The four routes above, their files read now; InvalidConfig naming `docs` if the extra is not installed."""
    router = APIRouter(include_in_schema=False)
    for route, (package, name, media) in FILES.items():
        router.add_api_route(f"/docs{route}", _file(_read(package, name), media), methods=["GET"], name=f"docs{route}")
    return router


def _read(package: str, name: str) -> bytes:
    try:
        return resources.files(package).joinpath(name).read_bytes()
    except (ModuleNotFoundError, OSError):
        raise InvalidConfig(
            "docs", True, f"needs Swagger UI's files ({package}/{name}), from the docs extra: {DOCS_EXTRA}"
        ) from None


def _file(body: bytes, media: str) -> Any:
    async def file() -> Response:
        headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response(body, media_type=media, headers=headers)

    return file
