"""Images named in OpenAI's JSON body form (`{"image_url": ...}` or `{"file_id": ...}`), turned into bytes.

Rules:

- A `data:` URL (`data:image/png;base64,...`) is decoded; it is the form
  this server always takes.
- A `file_id` is refused (400 naming the field): this server keeps no files
  API.
- An `http(s)` URL is fetched only when its host is on the operator's list
  (the app arg `image_url_hosts`, exact host names); otherwise it is refused
  before any request leaves the server (no server-side request forgery).
  A fetch follows at most `MAX_REDIRECTS` redirects, each to a listed host
  (one off the list is refused, not followed), gives up after
  `FETCH_TIMEOUT_S`, and reads at most the body limit
  (`jobs.max_body_bytes`); any failure is a 400 naming the field and why.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from f2f.errors import InvalidInput
from f2f.serving.api.routers.parsing import b64decode

FETCH_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3


class ImageRef(BaseModel):
    """One image of the JSON form: an `image_url` (a data: URL, or an http(s) URL) or a `file_id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_url: str | None = Field(None, description="A data: URL (data:image/png;base64,...), or an allowed http(s) URL.")
    file_id: str | None = Field(None, description="Refused: this server keeps no files API.")

    @model_validator(mode="after")
    def _one(self) -> ImageRef:
        if (self.image_url is None) == (self.file_id is None):
            raise ValueError("give one of image_url or file_id")
        return self


def image_bytes(ref: ImageRef, field: str, hosts: tuple[str, ...], max_bytes: int) -> bytes:
    """The bytes `ref` names, by the module's rules; InvalidInput naming `field` (e.g. `images[0]`) otherwise."""
    if ref.file_id is not None:
        raise InvalidInput(f"{field}.file_id", ref.file_id, "this server keeps no files API: send image_url as a data: URL")
    url = ref.image_url or ""
    scheme = url.partition(":")[0].lower()
    if scheme == "data":
        return b64decode(url, f"{field}.image_url")
    if scheme not in ("http", "https"):
        raise InvalidInput(f"{field}.image_url", url[:80], "must be a data: URL, or an http(s) URL of an allowed host")
    host = urllib.parse.urlsplit(url).hostname or ""
    if host not in hosts:
        rule = f"fetching from {host or 'that host'} is not allowed on this server: send a data: URL" + (
            f", or use one of the allowed hosts ({', '.join(hosts)})" if hosts else " (the app arg image_url_hosts lists hosts)"
        )
        raise InvalidInput(f"{field}.image_url", url[:200], rule)
    return _fetch(url, f"{field}.image_url", hosts, max_bytes)


class _ListedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def __init__(self, hosts: tuple[str, ...], field: str) -> None:
        self.hosts, self.field = hosts, field

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        host = urllib.parse.urlsplit(newurl).hostname or ""
        if host not in self.hosts or urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise InvalidInput(self.field, req.full_url[:200], f"redirects to {newurl[:200]}, which is not an allowed host")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(url: str, field: str, hosts: tuple[str, ...], max_bytes: int) -> bytes:
    opener = urllib.request.build_opener(_ListedRedirects(hosts, field))
    try:
        with opener.open(urllib.request.Request(url, headers={"Accept": "image/*"}), timeout=FETCH_TIMEOUT_S) as response:
            data = response.read(max_bytes + 1)
    except InvalidInput:
        raise  # a redirect off the list
    except urllib.error.HTTPError as exc:
        raise InvalidInput(field, url[:200], f"could not be fetched: the host answered {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InvalidInput(field, url[:200], f"could not be fetched ({reason})") from None
    if len(data) > max_bytes:
        raise InvalidInput(field, url[:200], f"is over the body limit of {max_bytes:,} bytes (jobs.max_body_bytes)")
    return data
