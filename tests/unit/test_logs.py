"""Job ids on log lines (`f2f.serving.logs`), without a Ray cluster: Serve's own JSON log file set-up, in this process."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from f2f.serving import logs

pytest.importorskip("ray")


@pytest.fixture
def serve_log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Serve's replica logger, JSON, writing to a file under tmp_path, as a replica sets it up; restored after."""
    from ray.serve._private.common import ServeComponentType
    from ray.serve._private.logging_utils import configure_component_logger
    from ray.serve.schema import LoggingConfig

    serve_logger, f2f_logger = logging.getLogger(logs.SERVE_LOGGER), logging.getLogger(logs.F2F_LOGGER)
    saved = [(lg, lg.handlers[:], lg.filters[:], lg.level, lg.propagate) for lg in (serve_logger, f2f_logger)]
    configure_component_logger(
        component_name="VLM",
        component_id="abc",
        logging_config=LoggingConfig(encoding="JSON", logs_dir=str(tmp_path), additional_log_standard_attrs=["name"]),
        component_type=ServeComponentType.REPLICA,
        max_bytes=2**20,
        backup_count=1,
    )
    monkeypatch.setattr(logs, "_in_replica", lambda: True)
    yield tmp_path
    for lg, handlers, filters, level, propagate in saved:
        for handler in lg.handlers:
            if handler not in handlers:
                handler.close()
        lg.handlers[:], lg.filters[:], lg.level, lg.propagate = handlers, filters, level, propagate


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for path in folder.glob("*.log") for line in path.read_text().splitlines()]


def test_a_jobs_lines_name_it_and_its_handle_calls_carry_it_as_the_request_id(serve_log_file: Path) -> None:
    from ray.serve.context import _get_serve_request_context

    logs.log_to_serve()
    log = logging.getLogger("f2f.serving.test")

    async def job() -> str:
        log.info("inside")
        await asyncio.to_thread(log.info, "in a thread")
        return _get_serve_request_context().request_id

    assert asyncio.run(logs.in_job("a" * 32, job())) == "a" * 32
    log.info("outside")
    lines = {line["message"]: line for line in _lines(serve_log_file)}
    for message in ("inside", "in a thread"):
        assert lines[message][logs.JOB_FIELD] == "a" * 32 and lines[message]["request_id"] == "a" * 32
        assert lines[message]["name"] == "f2f.serving.test" and lines[message]["deployment"] == "VLM"
    assert logs.JOB_FIELD not in lines["outside"] and not lines["outside"].get("request_id")
    assert _get_serve_request_context().request_id == ""  # restored after the job


def test_extra_names_one_line_and_wins_over_the_current_job(serve_log_file: Path) -> None:
    logs.log_to_serve()
    log = logging.getLogger("f2f.serving.test")
    log.info("about b", extra=logs.job_fields("b" * 32))
    with logs.job_logging("c" * 32):
        log.info("about d", extra=logs.job_fields("d" * 32))
    lines = {line["message"]: line for line in _lines(serve_log_file)}
    assert lines["about b"][logs.JOB_FIELD] == "b" * 32 and lines["about d"][logs.JOB_FIELD] == "d" * 32


def test_a_model_replica_takes_the_request_id_as_the_job_and_serves_own_lines_carry_it(serve_log_file: Path) -> None:
    from ray.serve.context import _set_request_context, _unset_request_context

    logs.log_to_serve(request_id_is_job=True)
    _set_request_context(request_id="e" * 32)  # as the replica does for a call from the worker
    try:
        logging.getLogger("ray.serve").info("CALL chat OK 3.0ms")
        logging.getLogger("f2f.backends").info("answered")
    finally:
        _unset_request_context()
    logging.getLogger("ray.serve").info("between calls")
    lines = {line["message"]: line for line in _lines(serve_log_file)}
    assert lines["CALL chat OK 3.0ms"][logs.JOB_FIELD] == "e" * 32 and lines["answered"][logs.JOB_FIELD] == "e" * 32
    assert logs.JOB_FIELD not in lines["between calls"]


def test_set_up_twice_writes_each_line_once(serve_log_file: Path) -> None:
    logs.log_to_serve()
    logs.log_to_serve()
    logging.getLogger("f2f.serving").warning("once")
    assert [line["message"] for line in _lines(serve_log_file)].count("once") == 1


def test_outside_a_replica_logging_is_left_as_it_is() -> None:
    f2f_logger = logging.getLogger(logs.F2F_LOGGER)
    before = (f2f_logger.handlers[:], f2f_logger.propagate, f2f_logger.level)
    logs.log_to_serve(request_id_is_job=True)
    assert (f2f_logger.handlers, f2f_logger.propagate, f2f_logger.level) == before
    assert logs.current_job() is None
    with logs.job_logging("f" * 32):
        assert logs.current_job() == "f" * 32
    assert logs.current_job() is None


# --- the Serve config files turn JSON logs on, and `f2f serve` passes them to Serve ---------------------------------

SERVE_FILES = sorted((Path(__file__).resolve().parents[2] / "serve").glob("*.yaml"))


@pytest.mark.parametrize("path", SERVE_FILES, ids=lambda p: p.name)
def test_every_serve_config_file_asks_for_json_logs_in_a_form_serve_accepts(path: Path) -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    for app in schema.applications:
        assert app.logging_config is not None and app.logging_config.encoding == "JSON", path.name


def test_run_config_file_passes_each_applications_logging_config_to_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from f2f.serving import app

    runs: list[dict] = []
    monkeypatch.setattr(app.serve, "start", lambda http_options: None)
    monkeypatch.setattr(app.serve, "run", lambda target, **kwargs: runs.append(kwargs))
    monkeypatch.setattr(app, "_import_builder", lambda path: lambda args: "the app")
    apps = [{"import_path": "x:y", "name": "a", "logging_config": {"encoding": "JSON"}}, {"import_path": "x:y", "name": "b"}]
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump({"applications": apps}))
    app.run_config_file(tmp_path / "serve.yaml")
    assert [run["logging_config"] for run in runs] == [{"encoding": "JSON"}, None]
