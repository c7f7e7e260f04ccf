"""The one place that maps exceptions to HTTP statuses and the typed error body.

Body, always: `{"error": {"message", "type", "param", "code"}}`; never a traceback.

| exception | status | type | param |
|---|---|---|---|
| request validation (missing or malformed form field) | 400 | invalid_request_error | the field |
| `InvalidImage`, `InvalidInput`, `InvalidConfig` | 400 | invalid_request_error | the field, by its wire name |
| a Starlette `HTTPException` (unknown route, wrong method) | its status | invalid_request_error / server_error | null |
| `Unauthenticated` (no or an unknown API key) | 401 + `WWW-Authenticate` | invalid_request_error, `invalid_api_key` | null |
| `TooManyJobs` (`auth.max_active_jobs_per_key`) | 429 + `Retry-After` | invalid_request_error, `too_many_jobs` | null |
| `TooManyWaiting`, a key's (`max_waiting_requests_per_key`) | 429 + `Retry-After` | invalid_request_error | null |
| `TooManyWaiting` in all (`max_waiting_requests`) | 503 + `Retry-After` | server_error, `too_many_waiting` | null |
| `Overloaded` (over `ingress_max_ongoing_requests`) | 503 + `Retry-After` | server_error, `overloaded` | null |
| `ClientGone` (the client left before its job was created) | 499, to nobody | invalid_request_error | null |
| `BodyTooLarge` (over `jobs.max_body_bytes`) | 413 | invalid_request_error, code `body_too_large` | null |
| `JobNotFound` (unknown or expired job id), `NoSuchOutput`, `ModelNotFound` | 404 | invalid_request_error | null |
| `JobNotFinished` (output of an unfinished job, cancel of a finished one) | 409 | invalid_request_error | null |
| `IdempotencyConflict` (a key reused with another request) | 409 | invalid_request_error | null |
| `RetryLater` (the queue is full: `overloaded`; the job volume is: `storage_full`) | 503 + `Retry-After` | server_error | null |
| `StoreUnavailable` (read-only, failing: `store_unavailable`; full: `storage_full`) | 503 + `Retry-After` | server_error | null |
| `JobUnreadable` (a job record this version cannot parse: `job_unreadable`) | 503 + `Retry-After` | server_error | null |
| `JobFailed` (a synchronous edit's job failed) | 400 bad input; 503 `_TRANSIENT` codes; else 500 | the job's | null |
| `EditCancelled`, `NotReady` (a deployment is not healthy) | 503 | server_error | null |
| `BackendNotConfigured` | 503 | server_error | null |
| `VLMEndpointError` | 502 | server_error | null |
| anything else | 500 | server_error, a generic message (the exception is logged) | null |

A job that fails in a worker keeps its error as `job_error` makes it (the
edit's `InvalidInput` is the caller's: `invalid_request_error` with its code;
another `F2FError` is the server's, with its message and code; anything
else is `edit_failed` with a generic message, the exception logged where
it happened), and every route that answers the failed job answers that
error (`JobFailed`): what a failure means is decided here, once.

Choices: validation is 400, as the OpenAI API answers (not FastAPI's 422);
an image over `input.max_image_pixels` is 400 like every other image rule
(no message parsing to tell it apart; a body-size limit, 413, belongs to
the proxy); a cancelled edit is 503 because the server stopped it, the
client may still be listening. A job record this version cannot parse is
503, not 404: the job exists (a newer version wrote it during a rolling
upgrade, and a replica of that version, or this one once upgraded, reads
it), and a 404 would tell the caller its job is gone. A store error is
logged (a warning) where it is answered. Errors name fields by their wire names
(`f2f.request.check_edit` is told them).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from f2f.errors import BackendNotConfigured, EditCancelled, F2FError, InvalidInput, ReplicaLost, VLMEndpointError, unwrap
from f2f.serving.api.admission import Overloaded, TooManyWaiting
from f2f.serving.api.auth import TooManyJobs, Unauthenticated
from f2f.serving.api.wire import ErrorInfo, ErrorResponse, JobError
from f2f.serving.jobs import IdempotencyConflict, JobNotFound, StorageFull, StoreUnavailable

logger = logging.getLogger("f2f.serving")

_REQUEST_PARTS = {"body", "query", "path", "header", "form"}
_TRANSIENT = (EditCancelled.code, ReplicaLost.code, StorageFull.code)  # a failed job's codes a retry may get past: 503


class NotReady(F2FError):
    """A deployment of the application is not healthy, or the job queue is unavailable."""

    code = "not_ready"


class BodyTooLarge(F2FError):
    """The request body is over the limit."""

    code = "body_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the request body is over the limit of {max_bytes:,} bytes (jobs.max_body_bytes)")


class NoSuchOutput(F2FError):
    """The job finished without this output (e.g. no video was asked for)."""

    code = "no_such_output"


class ModelNotFound(F2FError):
    """A `model` this server does not serve (answered as the OpenAI API answers it)."""

    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.")


class JobNotFinished(F2FError):
    """The job is not in the state this request needs (`code` says which way)."""

    def __init__(self, message: str, code: str = "job_not_finished") -> None:
        super().__init__(message)
        self.code = code


class RetryLater(F2FError):
    """The server cannot take a job now (the queue or the job volume is full); `code` says which."""

    def __init__(self, message: str, retry_after_s: int, code: str = "overloaded") -> None:
        super().__init__(message)
        self.retry_after_s, self.code = retry_after_s, code


class ClientGone(F2FError):
    """The client disconnected before its job was created; none is."""

    code = "client_gone"


class JobFailed(F2FError):
    """A synchronous edit's job failed or was cancelled; carries the job's error."""

    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error
        self.code = error.code or "edit_failed"


def job_error(exc: BaseException, message: str | None = None) -> JobError:
    """The error a job that failed with `exc` keeps (`message`, when given, says it better than the exception)."""
    exc = unwrap(exc)
    if isinstance(exc, InvalidInput):
        return JobError(message=message or str(exc), type="invalid_request_error", code=exc.code)
    if isinstance(exc, F2FError):
        return JobError(message=message or str(exc), code=exc.code)
    return JobError(message=message or "the edit failed; see the server log", code="edit_failed")


def error_response(exc: BaseException) -> JSONResponse:
    """The HTTP response for `exc`, by the table in the module docstring."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:  # Starlette's task groups wrap errors
        exc = exc.exceptions[0]
    status, info = _classify(exc)
    headers = None
    if isinstance(exc, (RetryLater, TooManyJobs, TooManyWaiting, Overloaded, StoreUnavailable)):
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(status_code=status, content=ErrorResponse(error=info).model_dump(), headers=headers)


def _classify(exc: BaseException) -> tuple[int, ErrorInfo]:
    if isinstance(exc, RequestValidationError):
        return 400, _validation_info(exc)
    if isinstance(exc, InvalidInput):
        return 400, ErrorInfo(message=str(exc), type="invalid_request_error", param=exc.field, code=exc.code)
    if isinstance(exc, StarletteHTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return exc.status_code, ErrorInfo(message=str(exc.detail), type=kind, code=f"http_{exc.status_code}")
    if isinstance(exc, Unauthenticated):
        return 401, ErrorInfo(message=str(exc), type="invalid_request_error", code=exc.code)
    if isinstance(exc, TooManyJobs) or (isinstance(exc, TooManyWaiting) and exc.per_key):
        return 429, ErrorInfo(message=str(exc), type="invalid_request_error", code=exc.code)
    if isinstance(exc, (TooManyWaiting, Overloaded)):
        return 503, ErrorInfo(message=str(exc), type="server_error", code=exc.code)
    if isinstance(exc, ClientGone):
        return 499, ErrorInfo(message=str(exc), type="invalid_request_error", code=exc.code)
    if isinstance(exc, BodyTooLarge):
        return 413, ErrorInfo(message=str(exc), type="invalid_request_error", code=exc.code)
    if isinstance(exc, (JobNotFound, NoSuchOutput, ModelNotFound)):
        return 404, ErrorInfo(message=str(exc), type="invalid_request_error", code=exc.code)
    if isinstance(exc, (JobNotFinished, IdempotencyConflict)):
        return 409, ErrorInfo(message=str(exc), type="invalid_request_error", code=exc.code)
    if isinstance(exc, JobFailed):
        error = exc.error
        status = 400 if error.type == "invalid_request_error" else 503 if error.code in _TRANSIENT else 500
        return status, ErrorInfo(message=error.message, type=error.type, code=exc.code)
    if isinstance(exc, (EditCancelled, BackendNotConfigured, NotReady, RetryLater)):
        return 503, ErrorInfo(message=str(exc), type="server_error", code=exc.code)
    if isinstance(exc, StoreUnavailable):
        logger.warning("the job store failed a request: %s", exc)
        return 503, ErrorInfo(message=str(exc), type="server_error", code=exc.code)
    if isinstance(exc, VLMEndpointError):
        return 502, ErrorInfo(message=f"the VLM endpoint failed: {exc}", type="server_error", code=exc.code)
    logger.error("internal error while serving a request", exc_info=exc)
    return 500, ErrorInfo(message="internal server error; see the server log", type="server_error", code="internal_error")


def _validation_info(exc: RequestValidationError) -> ErrorInfo:
    """The first validation error, naming the request field, the rule and the value."""
    err: dict[str, Any] = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    param = ".".join(loc[1:] if loc and loc[0] in _REQUEST_PARTS else loc) or None
    message = f"{param}: {err.get('msg', 'invalid value')}" if param else str(err.get("msg", "invalid request"))
    if err.get("type") != "missing" and "input" in err:
        message += f" (got {err['input']!r:.100})"
    return ErrorInfo(message=message, type="invalid_request_error", param=param, code=str(err.get("type", "invalid")))


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception of `app` through `error_response`."""

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    for kind in (RequestValidationError, StarletteHTTPException, InvalidInput, F2FError):
        app.add_exception_handler(kind, handle)

    @app.middleware("http")
    async def _anything_else(request: Request, call_next: Any) -> Any:
        try:
            return await call_next(request)
        except Exception as exc:  # the last resort: a typed 500, never a traceback
            return error_response(exc)
