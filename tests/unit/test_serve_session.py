"""`f2f serve`'s server runs in a session of its own (`f2f.cli._in_own_session`): a signal to the command's process
group reaches the command only, which passes it on as SIGTERM; killed outright, it takes the server with it. Seen
with a stand-in server (no Ray), in a subprocess whose process group the test can signal."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 30.0  # generous: the stand-in answers at once, but CI machines stall
SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from f2f.cli import _in_own_session

out = Path(sys.argv[1])

def server():
    def stop(signum, _):
        raise KeyboardInterrupt  # as f2f serve's server does

    signal.signal(signal.SIGTERM, stop)
    (out / "ready").write_text(str(os.getpid()))
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        (out / "stopped").write_text(f"own session: {os.getsid(0) == os.getpid()}")

sys.exit(_in_own_session(server))
"""


def _wait_for(path: Path) -> str:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never written"
        time.sleep(0.05)
    time.sleep(0.05)  # written whole
    return path.read_text()


@pytest.fixture
def command(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, env=env, start_new_session=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()
    if (tmp_path / "ready").exists() and not (tmp_path / "stopped").exists():  # a failed test: no server left
        with contextlib.suppress(ProcessLookupError):
            os.kill(int((tmp_path / "ready").read_text()), signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_commands_group_is_passed_on_to_the_server_in_its_own_session(command, tmp_path, signum):
    server = int(_wait_for(tmp_path / "ready"))
    assert os.getsid(server) == server != os.getsid(command.pid)
    os.killpg(command.pid, signum)  # the server is in no group of the command's: only the command hears it
    assert command.wait(timeout=WAIT_S) == 0
    assert _wait_for(tmp_path / "stopped") == "own session: True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_command_killed_outright_stops_its_server(command, tmp_path):
    _wait_for(tmp_path / "ready")
    command.kill()
    command.wait()
    assert _wait_for(tmp_path / "stopped") == "own session: True"  # SIGTERM on its parent's death: a graceful stop
