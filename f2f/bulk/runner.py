"""Bulk edits on Ray: actor pools for the VLM and the video generator, a resumable journal, per-item outcomes.

Rules:

- Ray: joins the cluster named by `RAY_ADDRESS` (as under `ray job submit`)
  or one already running on this machine, else starts a local one on
  loopback. The same command runs on a CPU laptop (tiny profile) and on a
  GPU cluster (a real profile).
- Actors: `vlms` VLM actors (each answers several chats at once) and
  `generators` generator actors (each makes one video at a time, with
  `generator_gpus` GPUs). Defaults from the cluster: no GPU -> everything on
  CPU, one of each; one GPU -> one of each sharing it (0.3 + 0.7); N >= 2
  GPUs -> one VLM on a GPU of its own and N - 1 generators.
- Items run concurrently (twice as many as generators, so captions and
  selections overlap videos), each through the same `f2f.pipeline.edit` as
  `f2f edit`. An actor lost mid-item (out of memory, a node lost) is
  restarted by Ray and the item is tried once more in this run.
- Per-item failures (unreadable image, out of memory, timeout, a model
  error) are recorded with a reason and never stop the run; the VLM's
  unusable answers are not failures (status `fallback`, as in `f2f edit`).
- Resume: `journal.jsonl` gets one line per finished attempt, written and
  fsynced after the item's files. A rerun skips items whose key (image
  content, prompt, seeds, options, run settings) succeeded, and tries failed
  ones again while they have had at most `max_retries` retries, except those
  that can only fail again (`retry` false: the row's own data broke a rule
  of the edit, an `InvalidInput` such as an image corrupt behind a good
  header; the manifest's check finds the others before any work). An
  interrupted run loses only the items in flight.
- The output folder belongs to one manifest (`bulk.json` holds its hash): a
  different manifest is refused before any work starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from f2f.bulk.manifest import Item, Manifest, ManifestError
from f2f.config import F2FConfig, VideoConfig
from f2f.errors import EditCancelled, F2FError, InvalidInput, unwrap
from f2f.pipeline import run_edit
from f2f.protocols import CancelToken, Frames, Message, Models, ProgressCallback
from f2f.request import check_edit
from f2f.result import EditResult, write_outputs
from f2f.serving import RAY_LOOPBACK_ENV


@dataclass(frozen=True)
class Resources:
    """Actor pool sizes and what each actor reserves."""

    vlms: int = 1
    generators: int = 1
    vlm_gpus: float = 0.0
    generator_gpus: float = 0.0
    actor_cpus: float = 0.25

    @classmethod
    def for_cluster(cls, gpus: float, vlms: int | None = None, generators: int | None = None) -> Resources:
        """The defaults for a cluster with `gpus` GPUs (see the module rules); explicit counts win."""
        if gpus >= 2:
            base = cls(vlms=1, generators=int(gpus) - 1, vlm_gpus=1, generator_gpus=1, actor_cpus=1)
        elif gpus >= 1:
            base = cls(vlms=1, generators=1, vlm_gpus=0.3, generator_gpus=0.7, actor_cpus=1)
        else:
            base = cls()
        return cls(vlms or base.vlms, generators or base.generators, base.vlm_gpus, base.generator_gpus, base.actor_cpus)


@dataclass
class Outcome:
    """One finished attempt at an item, as the journal and index record it."""

    id: str
    key: str
    row: int
    status: str  # succeeded | failed
    attempts: int
    reason: str | None = None
    edit_status: str | None = None  # edited | no_edit | fallback
    caption: str | None = None
    selected_frame: int | None = None
    seed: int | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    finished_at: float = 0.0
    retry: bool = True  # False: it can only fail again (the row's own data broke a rule of the edit)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --- Ray actors -------------------------------------------------------------------------------


class VLMActor:
    """A VLM backend in an actor: chats, several at once."""

    def __init__(self, config: F2FConfig) -> None:
        from f2f.backends import load_vlm

        self.vlm = load_vlm(config)

    async def chat(self, messages: Sequence[Message], max_tokens: int, temperature: float) -> str:
        return await self.vlm.chat(messages, max_tokens=max_tokens, temperature=temperature)


class GeneratorActor:
    """A video generator in an actor: one video at a time (the driver hands it one item at a time)."""

    def __init__(self, config: F2FConfig) -> None:
        from f2f.backends import load_generator

        self.generator = load_generator(config)

    async def generate(
        self, image: Image.Image, caption: str, seeds: Sequence[int], settings: VideoConfig, mask: Image.Image | None = None
    ) -> list[Frames]:
        return await self.generator.generate(image, caption, seeds, settings, mask=mask)


class PooledVLM:
    """`f2f.protocols.VLM` over VLM actors, round robin."""

    def __init__(self, actors: list[Any]) -> None:
        self.actors, self.next = actors, 0

    async def chat(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0) -> str:
        actor = self.actors[self.next % len(self.actors)]
        self.next += 1
        return await actor.chat.remote(list(messages), max_tokens, temperature)


class PooledGenerator:
    """`f2f.protocols.VideoGenerator` over generator actors: each call waits for an idle actor.

    `timeout_s` bounds the time on the actor (not the wait for one): past it the video is
    cancelled at its next step and TimeoutError is raised.
    """

    def __init__(self, actors: list[Any], timeout_s: float | None = None) -> None:
        self.idle: asyncio.Queue[Any] = asyncio.Queue()
        self.actors, self.timeout_s = actors, timeout_s
        for actor in actors:
            self.idle.put_nowait(actor)

    async def generate(
        self,
        image: Image.Image,
        caption: str,
        seeds: Sequence[int],
        settings: VideoConfig,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        mask: Image.Image | None = None,
    ) -> list[Frames]:
        import ray

        actor = await self.idle.get()
        call = actor.generate.remote(image, caption, list(seeds), settings, mask)
        try:
            return await asyncio.wait_for(_result(call), self.timeout_s)
        except (asyncio.CancelledError, TimeoutError):  # too long, or the run stops: stop the video at its next step
            ray.cancel(call)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await call  # the actor is free again once the cancelled video has stopped
            raise
        finally:
            self.idle.put_nowait(actor)


async def _result(ref: Any) -> Any:
    return await ref


def connect_ray(verbose: bool = False) -> None:
    """Join RAY_ADDRESS or a cluster running here; else start one on loopback. The job's actors print no
    progress bars and the driver no colour codes off a terminal, unless `verbose` (`f2f.quiet`)."""
    import ray

    from f2f import quiet

    if ray.is_initialized():
        return
    quiet.ray_driver(verbose)
    runtime_env = quiet.ray_runtime_env(verbose)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], configure_logging=False, runtime_env=runtime_env)
        return
    for key, value in RAY_LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)
    try:
        ray.init(address="auto", configure_logging=False, runtime_env=runtime_env)
    except ConnectionError:
        ray.init(include_dashboard=False, configure_logging=False, runtime_env=runtime_env)


def start_actors(config: F2FConfig, resources: Resources, timeout_s: float | None = None) -> Models:
    """The run's models: pools over the VLM and generator actors, loaded (waits until every actor is ready);
    `timeout_s` bounds each video (`PooledGenerator`)."""
    import ray

    def actor(cls: type, gpus: float, concurrency: int) -> Any:
        options = {"num_cpus": resources.actor_cpus, "num_gpus": gpus, "max_restarts": 2, "max_concurrency": concurrency}
        return ray.remote(cls).options(**options)

    vlm_cls, gen_cls = actor(VLMActor, resources.vlm_gpus, 16), actor(GeneratorActor, resources.generator_gpus, 1)
    vlms = [vlm_cls.remote(config) for _ in range(resources.vlms)]
    generators = [gen_cls.remote(config) for _ in range(resources.generators)]
    ray.get([a.__ray_ready__.remote() for a in vlms + generators])
    return Models(PooledVLM(vlms), PooledGenerator(generators, timeout_s))


# --- the output folder --------------------------------------------------------------------------


class OutputFolder:
    """`DIR`: items/, thumbs/, journal.jsonl, index.jsonl, summary.json, report.html, bulk.json."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        owner = root / "bulk.json"
        if owner.exists():
            recorded = json.loads(owner.read_text(encoding="utf-8"))
            if recorded.get("manifest_sha256") != manifest.sha256:
                raise ManifestError(
                    f"--out: {root} holds the results of another manifest ({recorded.get('manifest')}); "
                    "use a new folder, or the same manifest to resume"
                )
        (root / "items").mkdir(parents=True, exist_ok=True)
        (root / "thumbs").mkdir(exist_ok=True)
        owner.write_text(json.dumps({"manifest": str(manifest.path), "manifest_sha256": manifest.sha256}) + "\n")
        self.journal_path = root / "journal.jsonl"

    def journal(self) -> dict[str, dict[str, Any]]:
        """The last recorded attempt per item key (a torn last line of an interrupted run is ignored)."""
        last: dict[str, dict[str, Any]] = {}
        if self.journal_path.exists():
            for line in self.journal_path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    entry = json.loads(line)
                    last[entry["key"]] = entry
        return last

    def record(self, outcome: Outcome) -> None:
        """Append one attempt to the journal, on disk before this returns."""
        with self.journal_path.open("a", encoding="utf-8") as journal:
            journal.write(json.dumps(outcome.to_json()) + "\n")
            journal.flush()
            os.fsync(journal.fileno())

    def item_dir(self, item_id: str) -> Path:
        return self.root / "items" / item_id


# --- the run ------------------------------------------------------------------------------------


@dataclass
class RunStats:
    total: int
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        """Items with an outcome: done earlier (skipped), or succeeded or failed in this run."""
        return self.skipped + self.succeeded + self.failed


def run_settings(config: F2FConfig) -> dict[str, Any]:
    """The run's settings that change an edit's result (part of every item's key)."""
    return config.model_dump(mode="json", include={"profile", "video", "caption", "selection", "seed", "num_seeds"})


@dataclass(frozen=True)
class Plan:
    """What a run has left to do: (item, key, attempts so far) per item to edit, and how many are done already."""

    todo: list[tuple[Item, str, int]]
    skipped: int


def plan_items(items: list[Item], out: OutputFolder, config: F2FConfig, max_retries: int) -> Plan:
    """The items not done yet, from the journal: not succeeded, failed at most `max_retries` times, and worth a retry."""
    settings = run_settings(config)
    journal = out.journal()
    todo: list[tuple[Item, str, int]] = []
    for item in items:
        key = item.key(settings)
        previous = journal.get(key)
        if not previous or _retry(previous, max_retries):
            todo.append((item, key, previous["attempts"] if previous else 0))
    return Plan(todo, len(items) - len(todo))


def _retry(previous: dict[str, Any], max_retries: int) -> bool:
    """A failed attempt is tried again unless it can only fail again or had its retries (journals before `retry`: True)."""
    return previous["status"] != "succeeded" and previous.get("retry", True) and previous["attempts"] <= max_retries


async def run_items(
    work: Plan,
    out: OutputFolder,
    config: F2FConfig,
    models: Models,
    concurrency: int,
    on_outcome: Callable[[RunStats, Outcome | None], None],
) -> RunStats:
    """Edit every item of the plan; the run's counts."""
    stats = RunStats(total=len(work.todo) + work.skipped, skipped=work.skipped)
    on_outcome(stats, None)
    slots = asyncio.Semaphore(concurrency)

    async def one(item: Item, key: str, attempts: int) -> None:
        async with slots:
            outcome = await _edit_item(item, key, attempts, out, config, models)
        out.record(outcome)
        stats.succeeded += outcome.status == "succeeded"
        stats.failed += outcome.status == "failed"
        on_outcome(stats, outcome)

    await asyncio.gather(*(one(*item) for item in work.todo))
    return stats


async def _edit_item(
    item: Item,
    key: str,
    attempts: int,
    out: OutputFolder,
    config: F2FConfig,
    models: Models,
) -> Outcome:
    """One item to its outcome; never raises for the item's own failure."""
    from ray.exceptions import RayActorError

    folder = out.item_dir(item.id)
    retry = True
    for lost in range(2):  # a lost actor gets one more try in this run
        attempts += 1
        try:
            settings = item.settings()
            request = await asyncio.to_thread(check_edit, item.image, item.prompt, config, settings, None, "prompt", item.mask)
            await asyncio.to_thread(_thumbnail, request.source, out.root / "thumbs" / f"{item.id}-source.jpg")
            result = await run_edit(request, models, keep_frames=item.options.video)
            await asyncio.to_thread(_write_item, result, folder, out.root, item, request.config)
            return _succeeded(item, key, attempts, result)
        except RayActorError as exc:
            if lost == 0:
                continue
            reason = f"actor_lost: a model actor died twice ({type(exc).__name__}; out of memory?)"
        except TimeoutError:
            reason = f"timeout: its videos took longer than {models.generator.timeout_s:g} s on a generator"
        except (F2FError, EditCancelled) as exc:
            reason = f"{exc.code}: {unwrap(exc)}"
            retry = not isinstance(unwrap(exc), InvalidInput)  # the row's own data broke a rule: it can only fail again
        except Exception as exc:  # a model or library error: the item fails, the run goes on
            cause = unwrap(exc)
            reason = f"error: {type(cause).__name__}: {str(cause)[:300]}"
        return Outcome(item.id, key, item.row, "failed", attempts, reason=reason, finished_at=time.time(), retry=retry)
    raise AssertionError("unreachable")


def _succeeded(item: Item, key: str, attempts: int, result: EditResult) -> Outcome:
    return Outcome(
        item.id,
        key,
        item.row,
        "succeeded",
        attempts,
        edit_status=result.status,
        caption=result.caption,
        selected_frame=result.outcome.frame,
        seed=result.seed,
        timings_s={k: round(v, 4) for k, v in result.timings_s.items()},
        finished_at=time.time(),
    )


def _write_item(result: EditResult, folder: Path, root: Path, item: Item, config: F2FConfig) -> None:
    fps = config.video.fps if item.options.video else None
    write_outputs(result, folder, video_fps=fps)
    _thumbnail(result.image, root / "thumbs" / f"{item.id}-edited.jpg")
    _thumbnail(result.collage, root / "thumbs" / f"{item.id}-collage.jpg", size=320)


def _thumbnail(image: Image.Image, path: Path, size: int = 160) -> None:
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    tmp = path.with_name(f".{path.name}.tmp")
    thumb.save(tmp, format="JPEG", quality=75)
    os.replace(tmp, path)
