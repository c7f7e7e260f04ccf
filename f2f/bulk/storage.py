"""Where a bulk run reads and writes: a local path or an object-store URL, through `pyarrow.fs`.

Rules:

- A location is a local path (relative to the working folder) or a URL that
  `pyarrow.fs` knows: `s3://bucket/prefix` is the same scheme as the
  service's `jobs.objects` (credentials from the standard AWS chain,
  `AWS_ENDPOINT_URL` for MinIO or Ceph). Ray Data reads and writes the same
  locations with the same filesystem, on every node.
- Why pyarrow's filesystems: Ray Data is built on them (`read_parquet`,
  `filesystem=`), so the manifest, the images, the outputs and the index
  need no second client; boto3 (the service's) is not imported here.
- Writes are whole files: on a local disk written to a temporary name and
  renamed (a killed task leaves no half file under the real name); in a
  bucket an object appears whole or not at all.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from f2f.errors import F2FError

if TYPE_CHECKING:
    import pyarrow.fs as pafs


class StorageError(F2FError):
    """A location cannot be used (unknown scheme, no such bucket, unreachable endpoint)."""

    code = "storage_unavailable"


@dataclass(frozen=True)
class Location:
    """A file or folder: its filesystem and its path there; `str()` is the location as a user writes it."""

    fs: pafs.FileSystem
    path: str
    url: str

    @classmethod
    def of(cls, where: str | Path, field: str = "location") -> Location:
        """The location `where` names; StorageError names `field` and the location as given."""
        import pyarrow.fs as pafs

        text = str(where)
        if "://" not in text:
            absolute = str(Path(text).expanduser().resolve())
            return cls(pafs.LocalFileSystem(), absolute, absolute)
        try:
            fs, path = pafs.FileSystem.from_uri(text)
        except (pafs.ArrowInvalid, OSError, ValueError) as exc:  # type: ignore[attr-defined]
            raise StorageError(f"{field}: cannot use {text!r} ({exc})") from None
        return cls(fs, path.rstrip("/"), text.rstrip("/"))

    @property
    def local(self) -> bool:
        import pyarrow.fs as pafs

        return isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, *parts: str) -> Location:
        joined = "/".join(p.strip("/") for p in parts if p)
        return Location(self.fs, f"{self.path}/{joined}", f"{self.url}/{joined}")

    def relative(self, name: str) -> Location:
        """`name` as a row writes it: a URL or an absolute path as it is, else relative to this folder."""
        if "://" in name or os.path.isabs(name):
            return Location.of(name)
        return self.child(name)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        path, url = self.path.rsplit("/", 1)[0], self.url.rsplit("/", 1)[0]
        return Location(self.fs, path or "/", url)

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def open(self) -> IO[bytes]:
        return self.fs.open_input_file(self.path)  # seekable: the Parquet reader needs it

    def write_bytes(self, data: bytes) -> None:
        """The whole file, or nothing under this name (the module's rules)."""
        if not self.local:
            with self.fs.open_output_stream(self.path) as stream:
                stream.write(data)
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as file:
            file.write(data)
        os.replace(tmp, self.path)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def files(self, suffix: str) -> list[str]:
        """The paths of the files under this folder whose names end in `suffix` (none when it does not exist)."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        found = self.fs.get_file_info(selector)
        return sorted(f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(suffix))

    def make_dirs(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def __str__(self) -> str:
        return self.url
