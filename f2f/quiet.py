"""Third-party output off by default: f2f prints its own progress; `--verbose` lets the libraries speak again.

Each switch is the library's own, never a filter on its text:

- the model libraries in this process (transformers, diffusers, vLLM): errors only, no progress bars
  (their logging modules' `set_verbosity_error` and `disable_progress_bar`);
- every worker process of the Ray that `f2f serve` or `f2f bulk` starts or joins (replicas, actors), through
  the job's runtime environment: tqdm's own `TQDM_DISABLE` (every progress bar the model libraries draw
  while they load or write weights) and their verbosity variables; for `f2f serve`, also `ray_worker_setup`
  at each worker's start (Ray's `worker_process_setup_hook`): Celery's consumer in the edit worker prints no
  banner (what `celery worker --quiet` sets, through the `celeryd_init` signal Celery sends before it prints
  it) and no warning about running as root (its `SecurityWarning`, ignored by category);
- the lines Ray forwards from its workers to the driver carry no colour codes when stderr is not a terminal:
  Ray's `RAY_COLOR_PREFIX` for the "(Actor pid=...)" prefix, and colorama's `init()` (colorama is what Ray
  colours with, and ships) for what Ray colours whatever that says, such as the "[repeated 2x across cluster]"
  of its log deduplication: off a terminal, colorama strips its codes from the driver's stdout and stderr.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import warnings
from typing import Any

# Read when each worker process starts (a Serve replica, a bulk actor), on every node of the cluster.
QUIET_WORKER_ENV = {"TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error"}


def model_libraries(verbose: bool = False) -> None:
    """This process's model libraries: warnings and errors only and no progress bars, or (verbose) their defaults."""
    logging.getLogger("vllm").setLevel(logging.INFO if verbose else logging.WARNING)
    for name in ("transformers", "diffusers"):
        if importlib.util.find_spec(name) is not None:
            library_logging = importlib.import_module(f"{name}.utils.logging")
            if verbose:
                library_logging.set_verbosity_warning()
                library_logging.enable_progress_bar()
            else:
                library_logging.set_verbosity_error()
                library_logging.disable_progress_bar()


def ray_runtime_env(verbose: bool = False, celery_consumers: bool = False) -> dict[str, Any]:
    """The runtime environment of f2f's Ray job (`ray.init(runtime_env=...)`): its workers quiet, or (verbose) as
    Ray has them. `celery_consumers`: some run Celery's (`f2f serve`), set up quiet by `ray_worker_setup`."""
    if verbose:
        return {}
    env: dict[str, Any] = {"env_vars": dict(QUIET_WORKER_ENV)}
    if celery_consumers:
        env["worker_process_setup_hook"] = f"{__name__}.ray_worker_setup"
    return env


def ray_driver(verbose: bool = False) -> None:
    """Before `ray.init`: the workers' lines Ray prints here without colour codes when stderr is not a terminal."""
    if not verbose and not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        import ray  # noqa: F401  (puts the colorama it ships on the path, and imports it)

        colorama = importlib.import_module("colorama")
        colorama.init()  # each of stdout and stderr that is not a terminal is wrapped to strip the codes


def ray_worker_setup() -> None:
    """Run by Ray at the start of each worker process of a quiet f2f job: Celery's consumer starts without a word."""
    if importlib.util.find_spec("celery") is None:
        return
    from celery.exceptions import SecurityWarning
    from celery.signals import celeryd_init

    warnings.filterwarnings("ignore", category=SecurityWarning)
    celeryd_init.connect(_no_banner, weak=False)


def _no_banner(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Celery's `celeryd_init` receiver: the worker starts as `celery worker --quiet` would (no banner)."""
    if instance is not None:
        instance.quiet = True
