"""API keys: bearer tokens checked against a file of hashes; every job belongs to the key that made it.

Rules:

- The keys file is YAML, `keys: {NAME: "sha256:<64 hex>"}`: only hashes, so a
  leaked file does not leak a token. `f2f keys new NAME --file FILE` adds one
  and prints its token once. In Kubernetes the file is a Secret mounted into
  every Ray pod; it is read again when it changes (a rotated Secret needs no
  restart).
- A token is checked by hashing it and comparing with every stored hash with
  `hmac.compare_digest` (constant time, no early exit), so timing tells
  nothing about which key or how much of it matched.
- With `auth.required` (the default), every `/v1/...` route needs
  `Authorization: Bearer <token>`; `/healthz`, `/readyz`, the OpenAPI
  documents and the web page (`/`, static files that hold no data) stay open. Without it (the embedded local default, loopback
  only), every caller is `anonymous`.
- A key sees only its own jobs: another key's job id answers 404, as an
  unknown one does. A key may have at most `auth.max_active_jobs_per_key`
  jobs queued or running; one more is answered 429 with Retry-After.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import threading
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from f2f.errors import F2FError, InvalidConfig

ANONYMOUS = "anonymous"
KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
HASH = re.compile(r"sha256:[0-9a-f]{64}")


class AuthArgs(BaseModel):
    """The `auth` block of the app's args."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = Field(True, description="Every /v1 route needs a bearer token (off only for loopback-only setups).")
    keys_file: Path | None = Field(None, description="YAML of key names and token hashes (`f2f keys new`).")
    max_active_jobs_per_key: int = Field(16, ge=1, le=100_000, description="Jobs one key may have queued or running.")
    retry_after_s: int = Field(30, ge=1, description="Retry-After (seconds) of a 429.")

    @model_validator(mode="after")
    def _keys_when_required(self) -> AuthArgs:
        if self.required and self.keys_file is None:
            raise InvalidConfig("keys_file", None, "is needed when auth.required is true (create one with `f2f keys new`)")
        return self


class Unauthenticated(F2FError):
    """No bearer token, or one that matches no key."""

    code = "invalid_api_key"


class TooManyJobs(F2FError):
    """The key has as many jobs queued or running as it may."""

    code = "too_many_jobs"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "f2f_" + secrets.token_urlsafe(32)


def read_keys(path: Path) -> dict[str, str]:
    """Key name -> token hash; InvalidConfig naming the problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise InvalidConfig("auth.keys_file", str(path), f"cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InvalidConfig("auth.keys_file", str(path), f"not valid YAML ({exc})") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, dict):
        raise InvalidConfig("auth.keys_file", str(path), "must hold a mapping `keys: {NAME: sha256:<hex>}`")
    for name, digest in keys.items():
        if not isinstance(name, str) or not KEY_NAME.fullmatch(name):
            raise InvalidConfig(f"auth.keys_file.keys.{name}", name, "a key name is 1-64 letters, digits or ._-")
        if not isinstance(digest, str) or not HASH.fullmatch(digest):
            raise InvalidConfig(f"auth.keys_file.keys.{name}", "<hidden>", "must be sha256:<64 lowercase hex digits>")
    return dict(keys)


def add_key(path: Path, name: str) -> str:
    """Add key `name` to the keys file (created if missing); its new token."""
    if not KEY_NAME.fullmatch(name):
        raise InvalidConfig("name", name, "a key name is 1-64 letters, digits or ._-")
    keys = read_keys(path) if path.exists() else {}
    if name in keys:
        raise InvalidConfig("name", name, f"{path} already has this key; pick another name or remove it first")
    token = new_token()
    keys[name] = hash_token(token)
    path.write_text(yaml.safe_dump({"keys": keys}, sort_keys=True), encoding="utf-8")
    path.chmod(0o600)
    return token


class KeyRing:
    """The keys of a keys file, read again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: list[tuple[str, bytes]] = []
        self._load()

    def _load(self) -> None:
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise InvalidConfig("auth.keys_file", str(self.path), f"cannot read it ({exc.strerror})") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            keys = read_keys(self.path)
            with self._lock:
                self._keys = [(name, digest.encode()) for name, digest in keys.items()]
                self._stamp = stamp

    def who(self, token: str) -> str | None:
        """The name of the key whose token this is, else None; constant time over every key."""
        with contextlib.suppress(OSError, InvalidConfig):  # a file being rewritten: keep the keys read last
            self._load()
        offered = hash_token(token).encode()
        found = None
        for name, digest in self._keys:
            if hmac.compare_digest(offered, digest):
                found = name
        return found


def caller_of(authorization: str | None, ring: KeyRing | None) -> str:
    """The key name behind an Authorization header; `anonymous` when auth is off; Unauthenticated otherwise."""
    if ring is None:
        return ANONYMOUS
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("an API key is needed: send `Authorization: Bearer <token>`")
    name = ring.who(token.strip())
    if name is None:
        raise Unauthenticated("the API key is not valid")
    return name
