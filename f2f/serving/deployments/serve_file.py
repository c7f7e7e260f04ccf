"""A Serve config file as `f2f serve` reads it, without Ray: its applications and its HTTP address."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from f2f.errors import InvalidConfig

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000  # Ray Serve's defaults


def read_serve_config(path: Path) -> dict[str, Any]:
    """The file's mapping; InvalidConfig when it cannot be read or has no `applications`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidConfig("config", str(path), f"cannot read the Serve config file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InvalidConfig("config", str(path), f"not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("applications"), list) or not data["applications"]:
        raise InvalidConfig("applications", str(path), "a Serve config file needs a non-empty `applications` list")
    return data


def http_address(data: dict[str, Any], host: str | None = None, port: int | None = None) -> tuple[str, int]:
    """The proxy's host and port: the flags where given, else the file's `http_options`, else Serve's defaults."""
    http = data.get("http_options") or {}
    return host or http.get("host", DEFAULT_HOST), port or http.get("port", DEFAULT_PORT)
