"""The queue side of the job store: sending a job's message, and the sweep each ingress replica runs."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from f2f.serving.jobs.base import StoreBase
from f2f.serving.jobs.record import StoreUnavailable
from f2f.serving.logs import job_fields

logger = logging.getLogger("f2f.serving")


async def send(store: StoreBase, queue: Any, job_id: str) -> bool:
    """Send the job's message to the queue (`queue.send(job_id)`) and record it; False (logged) if the broker refused."""
    try:
        await asyncio.to_thread(queue.send, job_id)
    except Exception as exc:
        refused = (job_id, type(exc).__name__, exc)
        logger.warning("the job queue refused job %s (%s: %s); it is sent again later", *refused, extra=job_fields(job_id))
        return False
    await asyncio.to_thread(store.mark_sent, job_id)
    logger.info("job %s sent to the queue", job_id, extra=job_fields(job_id))
    return True


async def sweep_once(store: StoreBase, queue: Any, resend_after_s: float) -> None:
    """Delete expired jobs, queue again the running jobs whose worker was lost, send unsent jobs, and send every
    waiting job again when a worker was lost (it may have taken messages it never claimed)."""
    await asyncio.to_thread(store.sweep)
    for job_id in await asyncio.to_thread(store.stale_running):
        if (await asyncio.to_thread(store.requeue, job_id)).status == "queued":
            logger.warning("job %s lost its worker; queued again", job_id, extra=job_fields(job_id))
            await send(store, queue, job_id)
    lost = await asyncio.to_thread(store.lost_workers)
    due = await asyncio.to_thread(store.queued if lost else partial(store.unsent, resend_after_s))
    if lost:
        logger.warning("edit worker(s) %s lost; sending the %d waiting jobs again", ", ".join(lost), len(due))
    for job_id in due:
        if not await send(store, queue, job_id):
            break  # the broker is still down: try again at the next sweep


async def sweep_forever(store: StoreBase, queue: Any, every_s: float, resend_after_s: float) -> None:
    """`sweep_once` every `every_s` (each ingress replica runs one)."""
    while True:
        try:
            await sweep_once(store, queue, resend_after_s)
        except StoreUnavailable as exc:  # Redis or the volume is away for now: the next pass tries again
            logger.warning("the job store sweep could not run: %s", exc)
        except Exception:
            logger.exception("the job store sweep failed")
        await asyncio.sleep(every_s)
