"""Third-party output is off unless --verbose: the model libraries' progress bars in `f2f models make-tiny`,
Celery's banner and root warning in the edit worker's consumer, Ray's colour codes and its workers' progress
bars in `f2f bulk` (f2f.quiet). Ray itself is never started here."""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import subprocess
import sys
import warnings
from typing import Any

import pytest
from click.testing import CliRunner

from f2f import cli, quiet

PROGRESS_BAR = "Writing model shards"  # transformers' bar while it saves a checkpoint (tiny ones included)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("verbose", [False, True])
def test_make_tiny_draws_the_libraries_progress_bars_only_when_verbose(runner, tmp_path, verbose):
    pytest.importorskip("transformers")
    pytest.importorskip("diffusers")
    args = ["models", "make-tiny", str(tmp_path / "models")] + (["--verbose"] if verbose else [])
    try:
        result = runner.invoke(cli.main, args)
    finally:
        quiet.model_libraries()  # the libraries' switches are process-wide: leave them as the CLI does
    assert result.exit_code == 0, result.output
    assert "tiny-qwen2-vl: " in result.output  # its own lines, either way
    assert (PROGRESS_BAR in result.output) is verbose, result.output[-2000:]


@pytest.fixture
def celery_app() -> Any:
    celery = pytest.importorskip("celery")
    from celery.signals import celeryd_init

    yield celery.Celery("quiet-test", broker="memory://")
    celeryd_init.disconnect(quiet._no_banner)  # connected by ray_worker_setup in this process only for the test


@pytest.mark.parametrize("set_up", [True, False])
def test_a_ray_worker_set_up_quiet_starts_celerys_consumer_without_banner_or_root_warning(celery_app, set_up):
    """What a quiet job's worker process runs first (Ray's worker_process_setup_hook), then a Celery worker as Ray's
    consumer makes it (`worker_main(["worker", ...])`: no --quiet). Without the set-up, Celery prints its banner
    (`quiet` False) and, as root (a container), warns about it."""
    from celery.exceptions import SecurityWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if set_up:
            quiet.ray_worker_setup()
        worker = celery_app.Worker(hostname="quiet-test@here", pool="solo", quiet=False)
    root_warnings = [w for w in caught if issubclass(w.category, SecurityWarning)]
    assert worker.quiet is set_up  # Celery's on_start prints the banner unless quiet
    if set_up:
        assert root_warnings == []
    elif os.geteuid() == 0:
        assert root_warnings, "Celery warns a root worker: the check above would not see it go"


def test_the_quiet_runtime_env_is_what_each_worker_reads_at_its_start():
    env = quiet.ray_runtime_env(celery_consumers=True)
    assert env["env_vars"]["TQDM_DISABLE"] == "1"  # tqdm's own switch: every bar the model libraries draw
    module, _, name = env["worker_process_setup_hook"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is quiet.ray_worker_setup
    assert "worker_process_setup_hook" not in quiet.ray_runtime_env()  # bulk's workers run no Celery
    assert quiet.ray_runtime_env(verbose=True, celery_consumers=True) == {}  # --verbose: the workers as Ray has them


@pytest.mark.parametrize("address", [None, "ray://head:10001"])
@pytest.mark.parametrize("verbose", [False, True])
def test_bulk_starts_or_joins_ray_with_quiet_workers_unless_verbose(monkeypatch, request, address, verbose):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("f2f bulk needs Ray")
    import logging

    import ray
    import ray.data

    from f2f.bulk import run

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    inits: list[dict[str, Any]] = []  # colorama.init would wrap this process's stdout; Ray calls it with strip=False
    monkeypatch.setattr(sys.modules["colorama"], "init", lambda **kwargs: inits.append(kwargs))
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # the output is no terminal (a log file, `ray job logs`)
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.setenv(key, os.environ.get(key, "0"))  # connect_ray sets these; undone after the test
    if address:
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    context = ray.data.DataContext.get_current()
    for name in ("enable_progress_bars", "print_on_execution_start"):
        monkeypatch.setattr(context, name, getattr(context, name))  # connect_ray sets these; undone after the test
    data_logger = logging.getLogger("ray.data")
    request.addfinalizer(functools.partial(data_logger.setLevel, data_logger.level))
    data_logger.setLevel(logging.NOTSET)
    run.connect_ray(verbose)
    assert len(calls) == 1 and calls[0]["runtime_env"] == quiet.ray_runtime_env(verbose)
    assert calls[0]["address"] == (address or "auto")  # a cluster running here is joined before one is started
    # Ray Data's progress bars, its plan at the start of a run and its info lines, only when verbose
    assert (context.enable_progress_bars, context.print_on_execution_start) == (verbose, verbose)
    assert data_logger.level == (logging.NOTSET if verbose else logging.WARNING)
    # Ray's forwarded lines lose their colour codes off a terminal, unless verbose
    assert (os.environ.get("RAY_COLOR_PREFIX") == "0") is not verbose
    assert ({} in inits) is not verbose  # colorama strips, off a terminal, what Ray colours whatever that says (the next test)


# Ray's own path for a line its workers print: deduplicated across processes, then written to the driver's stderr
RAY_FORWARDS = """
import sys
from f2f import quiet
quiet.ray_driver(sys.argv[1] == "verbose")
from ray._private.ray_logging import stderr_deduplicator
from ray._private.worker import print_to_stdstream, print_worker_logs
line = {"ip": "127.0.0.1", "pid": "raylet", "is_err": True, "lines": ["WARNING: 8 PYTHON worker processes started"]}
for _ in range(3):
    print_to_stdstream(dict(line), ignore_prefix=False)
for batch in stderr_deduplicator.flush():
    print_worker_logs(batch, sys.stderr)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_the_lines_ray_forwards_carry_no_colour_codes_off_a_terminal_unless_verbose(verbose):
    """Ray colours the "[repeated 2x across cluster]" of its deduplication whatever RAY_COLOR_PREFIX says; a log
    file (stderr a pipe here) gets neither that colour nor the prefix's."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("f2f bulk needs Ray")
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_COLOR_PREFIX", "RAY_DEDUP_LOGS")}
    mode = "verbose" if verbose else "quiet"
    done = subprocess.run([sys.executable, "-c", RAY_FORWARDS, mode], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[repeated 2x across cluster]" in done.stderr, done.stderr  # the deduplicated line is there either way
    assert ("\x1b[" in done.stderr) is verbose, done.stderr
