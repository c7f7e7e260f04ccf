"""`GET /healthz` (the process is up) and `GET /readyz` (every deployment of the application is healthy in Serve's
view; their health checks load-test nothing: the generator's answers while it generates)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from f2f.serving.api.errors import NotReady, error_response
from f2f.serving.api.wire import Health

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=None)
async def readyz(request: Request) -> Health | JSONResponse:
    try:
        await request.app.state.ready()
    except Exception as exc:
        return error_response(exc if isinstance(exc, NotReady) else NotReady(f"not ready ({type(exc).__name__})"))
    return Health()
