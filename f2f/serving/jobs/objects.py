"""Sources and outputs as objects: a local folder (the embedded default, one machine) or an S3-compatible bucket.

A location is a URL: `file:///var/lib/f2f/objects` (or a plain path) or `s3://bucket/prefix` (AWS S3, or MinIO
and Ceph behind an endpoint URL). Keys are relative (`<job id>/source.png`, `<job id>/edited.png`, ...); under
`s3://bucket/prefix` the object is `prefix/<key>`.

Why boto3: it is AWS's own SDK and the most used S3 client, with the standard credential chain
(`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, shared files, web identity on EKS, instance roles),
`AWS_ENDPOINT_URL` for MinIO or Ceph, presigned URLs and retries. obstore is young; s3fs adds fsspec's file
semantics over aiobotocore, which nothing here needs. Ray Data reads the same `s3://` URLs through pyarrow.

Rules:

- A key is checked before it reaches a path or a request: relative, parts of
  `[A-Za-z0-9._-]`, no `.` or `..` part. Anything else is a ValueError (a
  caller's id is checked by the job store before it makes a key).
- `put` and `put_file` are whole or nothing: an S3 PUT is atomic, a local
  write goes through a temporary file and a rename.
- `put_folder` moves (a local folder on the same volume) or uploads every
  file of a folder under a prefix: how an attempt's outputs are kept.
- A missing object is `NoSuchObject`; a store that cannot be reached or
  written (an endpoint down, a read-only folder, denied access) is
  `ObjectStoreUnavailable`, a `StoreUnavailable` worth a retry later: a typed
  503 with Retry-After where a request waits on it (a full local volume is
  `StorageFull`, as for the job store).
- `check` at start: the folder can be written, or the bucket answers;
  otherwise one `InvalidConfig` naming the field and the URL.
- Expiry: `expire_after(ttl_s)` puts a lifecycle rule on the bucket for the
  prefix (S3 counts whole days: the TTL rounded up), keeping the bucket's
  other rules; the job sweep deletes a job's objects at its own TTL.
- Downloads: `local_path` is the file of a local object (served as it is);
  `presigned_url` is a time-limited GET URL of an S3 object, for clients that
  may fetch from the bucket themselves (with the file name and media type
  the bucket answers with).
- `listing` gives each key with its last change, oldest first; `touch` marks a
  local object as just used (an S3 object keeps the time it was written).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from f2f.errors import F2FError, InvalidConfig
from f2f.result import write_atomic
from f2f.serving.jobs.record import RETRY_AFTER_S, StoreUnavailable, no_space_as_storage_full

CHUNK = 1 << 20
_KEY_PART = re.compile(r"^[A-Za-z0-9._-]+$")


class NoSuchObject(F2FError):
    """No object has this key."""

    code = "no_such_object"


class ObjectStoreUnavailable(StoreUnavailable):
    """The object store cannot be reached or written now; worth a retry later."""

    code = "object_store_unavailable"


class Objects(Protocol):
    """What the service needs of an object store."""

    url: str
    retry_after_s: int  # of ObjectStoreUnavailable

    def check(self, field: str) -> None: ...
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None: ...
    def put_folder(self, prefix: str, folder: Path) -> None: ...
    def get(self, key: str) -> bytes: ...
    def stream(self, key: str) -> Iterator[bytes]: ...
    def exists(self, key: str) -> bool: ...
    def keys(self, prefix: str) -> list[str]: ...
    def listing(self, prefix: str) -> list[tuple[str, float]]: ...
    def touch(self, key: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def local_path(self, key: str) -> Path | None: ...
    def presigned_url(self, key: str, expires_s: int, filename: str | None = None, media: str | None = None) -> str | None: ...
    def expire_after(self, ttl_s: float) -> None: ...


def open_objects(url: str, endpoint_url: str | None = None, field: str = "jobs.objects") -> Objects:
    """The object store at `url` (`file://`, a path, or `s3://bucket[/prefix]`); InvalidConfig naming `field` else."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        if parsed.netloc not in ("", "localhost"):
            raise InvalidConfig(field, url, "a file:// URL names a local folder: file:///path")
        return LocalObjects(Path(parsed.path if parsed.scheme else url))
    if parsed.scheme == "s3":
        if not parsed.netloc or parsed.query or parsed.fragment:
            raise InvalidConfig(field, url, "must be s3://bucket or s3://bucket/prefix")
        return S3Objects(parsed.netloc, parsed.path.strip("/"), endpoint_url)
    raise InvalidConfig(field, url, "must be a folder (file:///path) or a bucket (s3://bucket/prefix)")


def check_key(key: str) -> str:
    """`key` if it is a relative key of safe parts; ValueError otherwise."""
    parts = key.split("/")
    if not key or any(part in (".", "..") or not _KEY_PART.fullmatch(part) for part in parts):
        raise ValueError(f"not an object key: {key[:80]!r}")
    return key


# --- a local folder ------------------------------------------------------------------------------------------------


class LocalObjects:
    """Objects as files under one folder (one machine: no server needed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.resolve().as_uri() if root.is_absolute() else str(root)
        self.retry_after_s = RETRY_AFTER_S

    def check(self, field: str) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise InvalidConfig(field, self.url, f"cannot write there ({exc.strerror or exc})") from None

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        with self._os_errors(f"write {key}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda f: f.write(data))

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        target = self._path(key)
        with self._os_errors(f"write {key}"), path.open("rb") as source:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, lambda f: shutil.copyfileobj(source, f, CHUNK))

    def put_folder(self, prefix: str, folder: Path) -> None:
        """Move the folder's files under `prefix` (a rename on the same volume, else a copy)."""
        for path in _files(folder):
            target = self._path(f"{prefix}/{path.relative_to(folder).as_posix()}")
            with self._os_errors(f"write {target.relative_to(self.root)}"):
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(path, target)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    self.put_file(str(target.relative_to(self.root)), path)

    def get(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def stream(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            source = path.open("rb")
        except FileNotFoundError:
            raise NoSuchObject(f"no object {key}") from None
        except OSError as exc:
            message = f"cannot read {key} in {self.url} ({exc.strerror or exc})"
            raise ObjectStoreUnavailable(message, self.retry_after_s) from None
        return _chunks(source)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix.rstrip("/"))
        return sorted(p.relative_to(self.root).as_posix() for p in _files(folder)) if folder.is_dir() else []

    def listing(self, prefix: str) -> list[tuple[str, float]]:
        found = []
        for key in self.keys(prefix):
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                found.append((key, self._path(key).stat().st_mtime))
        return sorted(found, key=lambda item: item[1])

    def touch(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._path(key))

    def delete(self, key: str) -> None:
        with self._os_errors(f"delete {key}"):
            self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        found = self.keys(prefix)
        if found:
            with self._os_errors(f"delete {prefix}"):
                shutil.rmtree(self._path(prefix.rstrip("/")))
        return len(found)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    @contextlib.contextmanager
    def _os_errors(self, what: str) -> Iterator[None]:
        try:
            with no_space_as_storage_full(what, self.retry_after_s):
                yield
        except OSError as exc:
            raise ObjectStoreUnavailable(f"cannot {what} ({exc.strerror or exc})", self.retry_after_s) from None

    def presigned_url(self, key: str, expires_s: int, filename: str | None = None, media: str | None = None) -> str | None:
        return None  # a local object is served by the ingress

    def expire_after(self, ttl_s: float) -> None:
        pass  # the job sweep deletes expired jobs' files


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _chunks(source: Any) -> Iterator[bytes]:
    with source:
        while chunk := source.read(CHUNK):
            yield chunk


# --- an S3-compatible bucket ---------------------------------------------------------------------------------------


class S3Objects:
    """Objects under `prefix` in an S3 bucket (AWS, or MinIO and Ceph at `endpoint_url` or `$AWS_ENDPOINT_URL`).

    Credentials come from boto3's standard chain. With an endpoint URL, keys are addressed by path
    (`endpoint/bucket/key`), as MinIO and Ceph expect.
    """

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self.retry_after_s = RETRY_AFTER_S
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        config = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint else "auto"},
        )
        self.endpoint = endpoint
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def check(self, field: str) -> None:
        where = f" at {self.endpoint}" if self.endpoint else ""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise InvalidConfig(field, self.url, f"the bucket does not answer{where} ({_reason(exc)})") from None

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with self._errors(f"write {key}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        with self._errors(f"write {key}"):
            self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs={"ContentType": content_type})

    def put_folder(self, prefix: str, folder: Path) -> None:
        for path in _files(folder):
            self.put_file(f"{prefix}/{path.relative_to(folder).as_posix()}", path, _media(path))

    def get(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def stream(self, key: str) -> Iterator[bytes]:
        with self._errors(f"read {key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return self._chunks(body, key)

    def _chunks(self, body: Any, key: str) -> Iterator[bytes]:
        with contextlib.closing(body), self._errors(f"read {key}"):
            yield from body.iter_chunks(CHUNK)

    def exists(self, key: str) -> bool:
        try:
            with self._errors(f"look up {key}"):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except NoSuchObject:
            return False
        return True

    def keys(self, prefix: str) -> list[str]:
        return sorted(key for key, _ in self.listing(prefix))

    def listing(self, prefix: str) -> list[tuple[str, float]]:
        start = self.prefix + check_key(prefix.rstrip("/")) + "/"
        found = []
        with self._errors(f"list {prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    found.append((item["Key"].removeprefix(self.prefix), item["LastModified"].timestamp()))
        return sorted(found, key=lambda item: item[1])

    def touch(self, key: str) -> None:
        pass  # an S3 object keeps the time it was written

    def delete(self, key: str) -> None:
        with self._errors(f"delete {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> int:
        found = self.keys(prefix)
        with self._errors(f"delete {prefix}"):
            for i in range(0, len(found), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": self.prefix + key} for key in found[i : i + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(found)

    def local_path(self, key: str) -> Path | None:
        return None

    def presigned_url(self, key: str, expires_s: int, filename: str | None = None, media: str | None = None) -> str | None:
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        if filename is not None:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        if media is not None:
            params["ResponseContentType"] = media
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)

    def expire_after(self, ttl_s: float) -> None:
        """A lifecycle rule deleting the prefix's objects after the TTL (whole days, rounded up); other rules stay."""
        rule_id = f"f2f-expiry:{self.prefix or '*'}"
        rule = {
            "ID": rule_id,
            "Filter": {"Prefix": self.prefix},
            "Status": "Enabled",
            "Expiration": {"Days": max(1, math.ceil(ttl_s / 86400))},
        }
        with self._errors("read the bucket's lifecycle rules"):
            try:
                rules = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket)["Rules"]
            except self.client.exceptions.ClientError as exc:
                if _code(exc) != "NoSuchLifecycleConfiguration":
                    raise
                rules = []
        kept = [r for r in rules if r.get("ID") != rule_id]
        with self._errors("write the bucket's lifecycle rules"):
            self.client.put_bucket_lifecycle_configuration(Bucket=self.bucket, LifecycleConfiguration={"Rules": [*kept, rule]})

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise NoSuchObject(f"no object {what.split(' ', 1)[-1]} in {self.url}") from None
            raise ObjectStoreUnavailable(f"cannot {what} in {self.url} ({_reason(exc)})", self.retry_after_s) from None
        except BotoCoreError as exc:
            raise ObjectStoreUnavailable(f"cannot {what} in {self.url} ({_reason(exc)})", self.retry_after_s) from None


_MEDIA = {".png": "image/png", ".jpeg": "image/jpeg", ".webp": "image/webp", ".mp4": "video/mp4", ".json": "application/json"}


def _media(path: Path) -> str:
    return _MEDIA.get(path.suffix, "application/octet-stream")


def _code(exc: Any) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _reason(exc: BaseException) -> str:
    code = _code(exc)
    return f"{code}: {exc}" if code and code not in str(exc) else str(exc)
