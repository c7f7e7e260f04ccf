"""A small client of the f2f HTTP API (standard library only): submit an edit, follow it, fetch its outputs.

Rules:

- `submit` sends `POST /v1/edits` as multipart (the image file as it is on
  disk) with an `Idempotency-Key`, so a retried submit never makes two jobs.
- `follow` reads `GET /v1/edits/{id}/events` (server-sent events) and hands
  each event to a callback until the server sends `done`; it returns the
  finished job.
- `download` writes the job's outputs as `f2f edit` names them: edited.png
  (or another format and size the service converts it to), collage.png,
  video.mp4 (if kept) and result.json (the edit's, the same file `f2f edit`
  writes), and job.json: the job as the API shows it.
- `jobs`, `cancel` and `select` wrap `GET /v1/edits`, `DELETE` and
  `POST .../select`.
- An HTTP error becomes `ServiceError` carrying the server's typed error
  (message, code, param); a server that cannot be reached, `ServiceError`
  with code `unreachable`.
- A redirect (a download answered with a presigned URL of the bucket:
  `jobs.downloads: redirect`) is followed without the API key when it leads
  to another host: the key is the service's, and a presigned URL carries
  its own signature.
"""

from __future__ import annotations

import json
import mimetypes
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from f2f.errors import F2FError

EventCallback = Callable[[str, dict[str, Any]], None]


class ServiceError(F2FError):
    """The service answered an error (its typed body), or could not be reached."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code or "service_error"
        self.status = status


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, but the Authorization header stays with the host it was meant for."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_Redirects)


class Client:
    """The f2f service at `base_url` (e.g. http://127.0.0.1:8000)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def submit(self, image: Path, prompt: str, mask: Path | None = None, **options: Any) -> dict[str, Any]:
        """Queue an edit; the job (status queued or running). Options: seed, seeds, n, steps, ... (None: left out)."""
        fields = {"prompt": prompt, **{k: _form_value(v) for k, v in options.items() if v is not None}}
        files = {"image": image, **({"mask": mask} if mask is not None else {})}
        body, content_type = _multipart(fields, files)
        headers = {"Content-Type": content_type, "Idempotency-Key": uuid.uuid4().hex}
        return json.loads(self._request("POST", "/v1/edits", body, headers))

    def job(self, job_id: str) -> dict[str, Any]:
        return json.loads(self._request("GET", f"/v1/edits/{job_id}"))

    def jobs(self, status: str | None = None, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """A page of the caller's jobs, newest first (`data`, `has_more`, `last_id`: the next page's `after`)."""
        query = urllib.parse.urlencode({k: v for k, v in {"status": status, "after": after, "limit": limit}.items() if v})
        return json.loads(self._request("GET", "/v1/edits" + (f"?{query}" if query else "")))

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask for the job to stop (a queued one at once, a running one at its next step); the job."""
        return json.loads(self._request("DELETE", f"/v1/edits/{job_id}"))

    def select(self, job_id: str, label: int) -> dict[str, Any]:
        """Make frame `label` of the chosen clip's path the job's result; the job."""
        body = json.dumps({"label": label}).encode()
        return json.loads(self._request("POST", f"/v1/edits/{job_id}/select", body, {"Content-Type": "application/json"}))

    def follow(self, job_id: str, on_event: EventCallback | None = None) -> dict[str, Any]:
        """Every event of the job until it finishes; the finished job."""
        for name, data in self._events(job_id):
            if on_event is not None:
                on_event(name, data)
            if name == "done":
                return data
        return self.job(job_id)  # the stream ended early (a proxy cut it): ask once more

    def download(
        self, job: dict[str, Any], out_dir: Path, output_format: str | None = None, size: str | None = None
    ) -> list[Path]:
        """Write the outputs of a succeeded job into `out_dir`; the files written.

        `output_format` (png, jpeg, webp) and `size` (WIDTHxHEIGHT) ask the service for the edited image so.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        query = urllib.parse.urlencode({k: v for k, v in {"output_format": output_format, "size": size}.items() if v})
        image = ("image", f"edited.{output_format or 'png'}", f"?{query}" if query else "")
        files = (image, ("collage", "collage.png", ""), ("video", "video.mp4", ""), ("result", "result.json", ""))
        written = []
        for link, filename, params in files:
            if link in job["links"]:
                path = out_dir / filename
                path.write_bytes(self._request("GET", job["links"][link] + params))
                written.append(path)
        record = out_dir / "job.json"
        record.write_text(json.dumps(job, indent=2) + "\n", encoding="utf-8")
        return [*written, record]

    def _events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        headers = {"Accept": "text/event-stream", **self.auth}
        request = urllib.request.Request(f"{self.base_url}/v1/edits/{job_id}/events", headers=headers)
        with self._open(request, timeout=None) as response:
            name = "message"
            for raw in response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("event:"):
                    name = line[len("event:") :].strip()
                elif line.startswith("data:"):
                    yield name, json.loads(line[len("data:") :])
                    name = "message"

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        headers = {**self.auth, **(headers or {})}
        request = urllib.request.Request(f"{self.base_url}{path}", data=body, method=method, headers=headers)
        with self._open(request, timeout=self.timeout_s) as response:
            return response.read()

    def _open(self, request: urllib.request.Request, timeout: float | None) -> Any:
        try:
            return _OPENER.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise _service_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceError(f"cannot reach the f2f service at {self.base_url} ({reason})", "unreachable") from None


def _service_error(exc: urllib.error.HTTPError) -> ServiceError:
    try:
        error = json.loads(exc.read())["error"]
        return ServiceError(f"the service answered {exc.code}: {error['message']}", error.get("code"), exc.code)
    except (ValueError, KeyError, TypeError):
        return ServiceError(f"the service answered {exc.code} {exc.reason}", None, exc.code)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, file in files.items():
        media = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        filename = file.name.replace('"', "%22")
        disposition = f'form-data; name="{name}"; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {media}\r\n\r\n"
        parts += [head.encode(), file.read_bytes(), b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
