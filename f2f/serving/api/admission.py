"""What one ingress replica takes on at once: requests in flight, and long waits per API key and in total.

Rules:

- The ingress only waits on I/O, so a replica serves many requests at once
  (`ingress_max_ongoing_requests`, hundreds by default): Serve's own
  `max_ongoing_requests` is that plus `PROBE_ROOM`, so that Serve hands the
  replica every request and this replica answers overload itself.
- `InFlightLimit` (ASGI middleware, outermost): a request over
  `ingress_max_ongoing_requests` is answered at once with a typed 503 `overloaded` and
  `Retry-After`, before its body is read. `/healthz` and `/readyz` are never
  refused and do not count: a probe must not fail because clients are busy.
- `WaitSlots`: the requests that wait for an edit (the synchronous OpenAI
  route, job event streams) hold a slot for as long as they wait. One more
  than `max_waiting_requests_per_key` for a key is a typed 429
  `too_many_waiting`; one more than `max_waiting_requests` in all is a typed 503 `too_many_waiting`; both
  with `Retry-After`, and both before any job is created, so one caller can
  neither exhaust the replica nor leave a job behind a refused wait.
- With API keys off (`auth.required: false`) every caller is the same
  `anonymous`: only the bound in all applies.
- The bounds are per ingress replica: with N replicas a key may hold N times
  as many waits (requests are spread over the replicas by Serve's router).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from f2f.errors import F2FError
from f2f.serving.deployments.ingress_args import IngressArgs

PROBE_ROOM = 16  # requests over the in-flight bound that Serve still hands a replica: its probes, and typed 503s
PROBES = frozenset({"/healthz", "/readyz"})


class TooManyWaiting(F2FError):
    """This key (`per_key`: 429) or this replica (503) holds as many long waits as it may."""

    code = "too_many_waiting"

    def __init__(self, message: str, retry_after_s: int, per_key: bool) -> None:
        super().__init__(message)
        self.retry_after_s, self.per_key = retry_after_s, per_key


class Overloaded(F2FError):
    """This ingress replica serves as many requests as it may."""

    code = "overloaded"

    def __init__(self, max_in_flight: int, retry_after_s: int) -> None:
        super().__init__(f"this server is answering {max_in_flight} requests, the most it takes at once; retry later")
        self.retry_after_s = retry_after_s


class WaitSlots:
    """The long waits this replica holds, per API key and in all (one event loop: no lock needed)."""

    def __init__(self, limits: IngressArgs, per_key: bool = True) -> None:
        self.limits, self.per_key = limits, per_key  # per_key False: API keys are off, every caller is one
        self.held: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.held.values())

    def take(self, owner: str) -> Callable[[], None]:
        """A slot for `owner`, or TooManyWaiting; the returned function gives it back (once, however often called)."""
        limits = self.limits
        if self.per_key and self.held[owner] >= limits.max_waiting_requests_per_key:
            message = (
                f"this API key holds {limits.max_waiting_requests_per_key} waiting requests (synchronous edits and event "
                "streams), the most it may at once (max_waiting_requests_per_key); retry later, or poll GET /v1/edits/{id}"
            )
            raise TooManyWaiting(message, limits.retry_after_s, per_key=True)
        if self.total >= limits.max_waiting_requests:
            message = (
                f"this server holds {limits.max_waiting_requests} waiting requests (synchronous edits and event streams), "
                "the most it takes at once (max_waiting_requests); retry later, or poll GET /v1/edits/{id}"
            )
            raise TooManyWaiting(message, limits.retry_after_s, per_key=False)
        self.held[owner] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.held[owner] -= 1
                if self.held[owner] <= 0:
                    del self.held[owner]

        return release

    @contextlib.contextmanager
    def hold(self, owner: str) -> Iterator[None]:
        release = self.take(owner)
        try:
            yield
        finally:
            release()


class InFlightLimit:
    """ASGI middleware: a typed 503 `overloaded` for a request over `ingress_max_ongoing_requests` (probes excepted)."""

    def __init__(self, app: Any, limits: IngressArgs) -> None:
        self.app, self.limits = app, limits
        self.in_flight = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in PROBES:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limits.ingress_max_ongoing_requests:
            from f2f.serving.api.errors import error_response

            response = error_response(Overloaded(self.limits.ingress_max_ongoing_requests, self.limits.retry_after_s))
            return await response(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
