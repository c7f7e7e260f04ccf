"""`f2f serve` honours $F2F_PORT as the README says: over the Serve config file's port, under --port. Seen through
the check of the port before Ray starts (a port in use is one line naming where it came from); Ray never starts."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from f2f import cli


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("f2f serve needs Ray")
    import ray

    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("Ray started"))
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.setenv(key, os.environ.get(key, "0"))  # f2f serve sets these; undone after the test


@pytest.fixture
def taken() -> Iterator[int]:
    """A port in use on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, ["serve", *args, "--metrics-port", "0"], env=env)
    return result.exit_code, result.output


def test_f2f_port_wins_over_the_files_port(no_ray, taken, tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"http_options": {"port": _free_port()}, "applications": [{"import_path": "x:y"}]}))
    status, output = _serve([str(config)], {"F2F_PORT": str(taken)})
    assert status == cli.EXIT_USAGE, output
    assert "F2F_PORT: the port is in use on 127.0.0.1" in output and f"(got {taken})" in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


def test_the_port_flag_wins_over_f2f_port(no_ray, taken):
    status, output = _serve(["--port", str(taken)], {"F2F_PORT": str(_free_port())})
    assert status == cli.EXIT_USAGE, output
    assert "--port: the port is in use on 127.0.0.1" in output and f"(got {taken})" in output


@pytest.mark.parametrize("value", ["eighty", "0", "70000"])
def test_a_bad_f2f_port_is_one_line_naming_it(no_ray, value):
    status, output = _serve([], {"F2F_PORT": value})
    assert status == cli.EXIT_USAGE, output
    assert "'--port'" in output and value in output and "Traceback" not in output


def test_the_default_serve_config_is_untouched_by_an_empty_f2f_port(no_ray, taken, tmp_path: Path):
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"http_options": {"port": taken}, "applications": [{"import_path": "x:y"}]}))
    status, output = _serve([str(config)], {"F2F_PORT": ""})  # set but empty: not given (click), the file's port
    assert status == cli.EXIT_USAGE, output
    assert f"{config}: http_options.port: the port is in use" in output
