"""What routes take through FastAPI's dependencies: the caller (its API key's name), the edit service, and the
ingress's HTTP args (public base URL, output bound)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from f2f.serving.api.auth import caller_of
from f2f.serving.api.service import EditService
from f2f.serving.deployments.ingress_args import IngressArgs

_BEARER = HTTPBearer(auto_error=False, description="An API key (`f2f keys new`); not needed when auth.required is false.")


def _service(request: Request) -> EditService:
    return request.app.state.service


def _http_args(request: Request) -> IngressArgs:
    return request.app.state.http_args


async def _caller(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)] = None) -> str:
    """The API key name of the request (Unauthenticated -> 401); `anonymous` when auth is off."""
    return caller_of(request.headers.get("authorization"), request.app.state.service.ring)


Service = Annotated[EditService, Depends(_service)]
Caller = Annotated[str, Depends(_caller)]
HttpArgs = Annotated[IngressArgs, Depends(_http_args)]
