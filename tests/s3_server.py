"""An S3-protocol server over HTTP on a free loopback port, for the tests: moto's server mode (`moto[server]`, a
test dependency), run as its own process. The product talks to it only through its S3 client (boto3)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "f2f-test", "AWS_SECRET_ACCESS_KEY": "f2f-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    """`python -m moto.server` on 127.0.0.1; `url` is its endpoint."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).close()
                return
            except OSError:
                assert self.process.poll() is None, "the S3 server (moto) exited at start"
                assert time.monotonic() < deadline, "the S3 server (moto) did not answer within 30 s"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def make_bucket(self, name: str = "f2f") -> None:
        import boto3

        keys = {
            "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }
        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", **keys).create_bucket(Bucket=name)

    def reset(self) -> None:
        """Forget every bucket and object."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


def available() -> bool:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        return False
    return True
