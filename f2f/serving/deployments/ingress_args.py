"""What only the ingress's HTTP side needs from the app's args: the public base URL of the links it hands out,
its docs page, the largest output image it makes, and what one replica takes on at once
(`f2f.serving.api.admission`).

Rules:

- `public_base_url`: the URL at which clients reach this application (the
  Serve app's route prefix included), e.g. `https://f2f.example.com` or
  `https://example.com/f2f`. It must be `http` or `https` with a host, and
  carry no user, query or fragment; trailing slashes are dropped
  (`https://example.com/f2f/` is `https://example.com/f2f`), and every link is
  the base followed by an absolute path (`/v1/edits/{id}/image?...`). A URL
  built for a caller never comes from the request's `Host` header (a client
  can send any). Without a base, `response_format=url` is a 400 naming
  `response_format` (`url_response_refusal`): an OpenAI client fetches the URL
  as it is, so a relative one would fail in the client, later and less
  clearly.
- `docs`: Swagger UI at `/docs` from the files of the `docs` extra
  (`fastapi-offline`), on this server only (`f2f.serving.api.routers.docs`); off by
  default (no `/docs`, `/redoc`), while `/openapi.json` is always served.
- `max_output_pixels`: the largest WIDTHxHEIGHT a request may ask an output to
  be resized to (`f2f.serving.api.outputs.check_size`).
- `image_url_hosts`: the hosts (exact names) whose http(s) image URLs the
  JSON form of `/v1/images/edits` may fetch; none by default: data: URLs
  only (`f2f.serving.api.image_urls`).
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from f2f.errors import InvalidInput

DOCS_PACKAGE = "fastapi_offline"
DOCS_EXTRA = "pip install 'f2f[docs]'"
DEFAULT_MAX_OUTPUT_PIXELS = 4096 * 4096  # 16 MP: the largest side (4096) squared


def check_public_base_url(value: str) -> str:
    """`value` by the rule above, trailing slashes dropped; a pydantic error (the field's rule) otherwise."""
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise PydanticCustomError(
            "public_base_url", "must be an http:// or https:// URL with a host, e.g. https://f2f.example.com"
        )
    if "?" in value or "#" in value or "@" in parts.netloc or any(c.isspace() for c in value):
        raise PydanticCustomError("public_base_url", "must carry no user, query (?), fragment (#) or spaces")
    return value.rstrip("/")


def check_docs_installed(value: bool) -> bool:
    if value and importlib.util.find_spec(DOCS_PACKAGE) is None:
        raise PydanticCustomError("docs", f"needs Swagger UI's files, from the docs extra: {DOCS_EXTRA} (or set docs: false)")
    return value


PublicBaseURL = Annotated[str, AfterValidator(check_public_base_url)]
DocsSwitch = Annotated[bool, AfterValidator(check_docs_installed)]


class IngressArgs(BaseModel):
    """The app args of the ingress's HTTP side (`AppArgs` fields of the same names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    public_base_url: PublicBaseURL | None = Field(None, description="Base of the URLs handed out (response_format=url).")
    docs: DocsSwitch = Field(False, description="Serve Swagger UI at /docs from this server's own files.")
    max_output_pixels: int = Field(DEFAULT_MAX_OUTPUT_PIXELS, ge=256, description="Largest output size (WIDTH x HEIGHT).")
    image_url_hosts: tuple[str, ...] = Field((), description="Hosts whose http(s) image URLs the JSON form may fetch.")
    # What one replica takes on at once (f2f.serving.api.admission); AppArgs checks their ranges.
    ingress_max_ongoing_requests: int = Field(1000, description="Requests in flight at once; one more is a typed 503.")
    max_waiting_requests: int = Field(500, description="Long waits held at once, all keys; one more is a typed 503.")
    max_waiting_requests_per_key: int = Field(32, description="Long waits one API key holds at once; one more is a 429.")
    retry_after_s: int = Field(10, ge=1, description="Retry-After of those answers (the app's jobs.retry_after_s).")

    @classmethod
    def of(cls, args: Any) -> IngressArgs:
        """The fields of the same names of `args` (an `AppArgs`), and `retry_after_s` from its `jobs`."""
        names = set(cls.model_fields) - {"retry_after_s"}
        return cls(**{name: getattr(args, name) for name in names}, retry_after_s=args.jobs.retry_after_s)


def url_response_refusal() -> InvalidInput:
    rule = (
        "url needs the server's public base URL, which is not set: use b64_json, or set the app arg public_base_url "
        "(e.g. https://f2f.example.com) on the server"
    )
    return InvalidInput("response_format", "url", rule)


def public_url(base: str, path: str, query: dict[str, Any]) -> str:
    """`base` (checked, no trailing slash) + the absolute `path` + the query."""
    return f"{base}{path}?{urlencode(query)}" if query else f"{base}{path}"
