"""A `redis-server` (Debian's package; `.ci/run` installs it) on a free loopback port, for the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """`redis-server` on 127.0.0.1; append-only persistence in `folder` when given (a restart keeps what it held)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.binary = shutil.which("redis-server")
        self.port, self.folder = free_port(), folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        assert self.binary is not None, "redis-server is not installed"
        persistence = ["--appendonly", "yes", "--dir", str(self.folder)] if self.folder else ["--appendonly", "no"]
        command = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", *persistence]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client, deadline = redis.Redis(host="127.0.0.1", port=self.port), time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()  # as a crash
            self.process.wait(10)
            self.process = None
