"""A bulk run on Ray Data: the manifest scanned, what is done skipped, the stages streamed, the reports written.

Rules:

- Ray: joins the cluster named by `RAY_ADDRESS` (as under `ray job submit`)
  or one already running on this machine, else starts a local one on
  loopback. The same command runs on a CPU laptop (tiny profile) and on a
  GPU cluster (a real profile).
- The driver holds nothing per item: the manifest is scanned streaming
  (`f2f.bulk.manifest.scan_manifest`), the items flow through Ray Data's
  streaming executor (`f2f.bulk.stages`), and the driver only counts the
  small outcome rows that come back. The reports are made in a Ray task.
- The plan (`Plan`): two VLM actor pools (caption, select) and a generator
  pool, their sizes and GPUs from the cluster's GPUs or from flags, printed
  at start. No GPU: everything on CPU, one VLM actor per pool, one
  generator. One GPU: shared (0.15 + 0.15 for the VLMs, 0.7 for the
  generator). N >= 2 GPUs: both VLM pools share one GPU, N - 1 generators on
  a GPU each. Each pool's actors run from `min` to its size
  (`concurrency=(min, max)`), as Ray Data scales them on their queues.
- Blocks: `block_rows` items a block (default 1: an item is the unit of
  load balancing, of retries and of what a killed driver loses; raise it
  when items are cheap and many).
- Resume: the index (`index/*.parquet`, one part per finished batch) is
  joined against the manifest's rows on the key; a row whose latest record
  succeeded, can only fail (`retry` false) or has had its `max_retries`
  retries (1 + max_retries attempts) drops out, the rest run, carrying their count of
  attempts. A driver killed mid-run loses the items in flight only.
- An actor lost mid-item (its process or its node) is restarted by Ray; the
  item's block is left out of the pass (Ray Data's `max_errored_blocks`),
  and the items with no record from the pass (an anti-join against its index
  parts) run again, at most `max_retries` times. Past that they are pending,
  tried on the next run, and the run ends with status 1.
- The output folder belongs to one manifest (`bulk.json` holds its hash): a
  different manifest is refused before any work starts.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from f2f.bulk.manifest import ManifestError, ScannedManifest, manifest_sha256, scan_manifest
from f2f.bulk.stages import Backends, CaptionStage, GenerateStage, ModelLoader, SelectStage, decode, finish
from f2f.bulk.storage import Location
from f2f.config import F2FConfig
from f2f.serving import RAY_LOOPBACK_ENV

JOIN_PARTITIONS = 8


@dataclass(frozen=True)
class Plan:
    """The actor pools and what each actor reserves."""

    vlms: int = 1  # actors per VLM pool (caption, select)
    generators: int = 1
    vlm_gpus: float = 0.0
    generator_gpus: float = 0.0
    actor_cpus: float = 0.25
    block_rows: int = 1

    @classmethod
    def for_cluster(
        cls, gpus: float, vlms: int | None = None, generators: int | None = None, block_rows: int | None = None
    ) -> Plan:
        """The defaults for a cluster with `gpus` GPUs (the module's rules); explicit values win."""
        if gpus >= 2:
            base = cls(vlms=1, generators=int(gpus) - 1, vlm_gpus=0.5, generator_gpus=1, actor_cpus=1)
        elif gpus >= 1:
            base = cls(vlms=1, generators=1, vlm_gpus=0.15, generator_gpus=0.7, actor_cpus=1)
        else:
            base = cls()
        return cls(
            vlms or base.vlms, generators or base.generators, base.vlm_gpus, base.generator_gpus, base.actor_cpus, block_rows or 1
        )

    def describe(self) -> str:
        return (
            f"caption: up to {self.vlms} VLM actors, select: up to {self.vlms} VLM actors ({self.vlm_gpus:g} GPU each); "
            f"generate: up to {self.generators} actors ({self.generator_gpus:g} GPU each); "
            f"decode and finish: Ray tasks on any node; {self.block_rows} item(s) a block"
        )


@dataclass
class RunStats:
    """The counts a run reports as it goes: finished earlier, and this run's successes and failures."""

    total: int
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.skipped + self.succeeded + self.failed


def run_settings(config: F2FConfig) -> dict[str, Any]:
    """The run's settings that change an edit's result (part of every item's key)."""
    return config.model_dump(mode="json", include={"profile", "video", "caption", "selection", "seed", "num_seeds"})


def claim_folder(out: Location, manifest: Location, sha256: str) -> None:
    """`bulk.json` names the manifest that owns `out`; another manifest's folder is refused (ManifestError)."""
    owner = out.child("bulk.json")
    if owner.exists():
        recorded = json.loads(owner.read_bytes())
        if recorded.get("manifest_sha256") != sha256:
            raise ManifestError(
                f"--out: {out} holds the results of another manifest ({recorded.get('manifest')}); "
                "use a new folder, or the same manifest to resume"
            )
    owner.write_text(json.dumps({"manifest": str(manifest), "manifest_sha256": sha256}) + "\n")


def connect_ray(verbose: bool = False) -> None:
    """Join RAY_ADDRESS or a cluster running here; else start one on loopback. The job's workers print no
    progress bars and the driver no colour codes off a terminal, unless `verbose` (`f2f.quiet`)."""
    import logging

    import ray

    from f2f import quiet

    if not ray.is_initialized():
        quiet.ray_driver(verbose)
        runtime_env = quiet.ray_runtime_env(verbose)
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], configure_logging=False, runtime_env=runtime_env)
        else:
            for key, value in RAY_LOOPBACK_ENV.items():
                os.environ.setdefault(key, value)
            try:
                ray.init(address="auto", configure_logging=False, runtime_env=runtime_env)
            except ConnectionError:
                ray.init(include_dashboard=False, configure_logging=False, runtime_env=runtime_env)
    import ray.data

    context = ray.data.DataContext.get_current()  # before any dataset is made: each keeps a copy
    context.max_errored_blocks = -1  # a block lost with its actor is left out of the pass, and tried again (BulkRun.go)
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    if not verbose:  # Ray Data's warnings stay (a pool that cannot be placed); its notes and "bars disabled" go
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


@dataclass
class BulkRun:
    """One run's inputs (the command's flags) and its models' loader."""

    manifest: Location
    out: Location
    config: F2FConfig
    input_root: Location | None = None
    max_retries: int = 2
    item_timeout_s: float | None = None
    vlms: int | None = None
    generators: int | None = None
    block_rows: int | None = None
    loader: ModelLoader = field(default_factory=Backends)

    def scan(self) -> ScannedManifest:
        """The output folder claimed and the manifest scanned (refused if malformed: a new output folder is removed
        again): before Ray or any model."""
        new = not self.out.exists()
        try:
            digest = manifest_sha256(self.manifest)
            claim_folder(self.out, self.manifest, digest)
            return scan_manifest(self.manifest, run_settings(self.config), self.out.child("manifest"), digest)
        except ManifestError:
            if new and self.out.exists():
                self.out.fs.delete_dir(self.out.path)
            raise

    def execute(
        self, scanned: ScannedManifest, verbose: bool, on_outcome: Callable[..., None], echo: Callable[[str], None]
    ) -> dict[str, Any]:
        """The run of a scanned manifest (Ray, what is left, the plan, the stages, the reports); the summary.
        `on_outcome(stats, failed_id, reason)` after each item; `echo` the run's own lines. KeyboardInterrupt: the
        reports are written, then it is raised again."""
        import ray

        connect_ray(verbose)
        todo, count = self.todo(scanned)
        if not count:
            data = self.reports(scanned, None, 0.0)
            echo(
                f"bulk: nothing to do: all {scanned.rows} items finished earlier (succeeded, failed more than "
                f"--max-retries {self.max_retries} times, or can only fail); {json.dumps(data['by_status'])}; "
                f"report: {self.out.child('report.html')}"
            )
            return data
        plan = Plan.for_cluster(ray.cluster_resources().get("GPU", 0), self.vlms, self.generators, self.block_rows)
        echo(f"bulk: {scanned.rows} items, {count} to do; plan: {plan.describe()}")
        stats = RunStats(total=scanned.rows, skipped=scanned.rows - count)
        on_outcome(stats, None, None)
        try:
            self.go(todo, stats, plan, on_outcome, echo)
        except KeyboardInterrupt:
            echo("\nbulk: interrupted; finished items are kept, rerun the same command to go on")
            raise
        finally:
            data = self.reports(scanned, stats, time.monotonic() - stats.started)
            echo(f"bulk: {json.dumps(data['by_status'])}; report: {self.out.child('report.html')}")
        return data

    def todo(self, scanned: ScannedManifest) -> tuple[Any, int]:
        """The rows not done yet, materialized in Ray's object store, and how many: the scan's rows joined
        against the index (the module's rules)."""
        import ray.data

        rows = ray.data.read_parquet(scanned.parts, filesystem=self.out.fs)
        index = self.out.child("index").files(".parquet")
        if index:
            max_retries = self.max_retries
            latest = (
                ray.data.read_parquet(index, filesystem=self.out.fs)
                .select_columns(["key", "status", "attempts", "retry"])
                .groupby("key")
                .map_groups(_latest, batch_format="pyarrow")
            )
            joined = rows.join(latest, join_type="left_outer", num_partitions=JOIN_PARTITIONS, on=("key",))
            rows = joined.filter(lambda r: not _done(r, max_retries)).drop_columns(["status", "retry"])
        todo = rows.materialize()
        return todo, todo.count()

    def stream(self, todo: Any, plan: Plan, run_id: str) -> Any:
        """The stages over `todo`: a dataset of small outcome rows (`status`, `id`, `reason`, `row`)."""
        import ray.data

        root = (self.input_root or self.manifest.parent).url
        config = self.config

        def pool(stage: type, gpus: float, size: int, *args: Any) -> dict[str, Any]:
            # Ray Data retries an actor's lost task on the restarted actor forever by default: an item that kills its
            # actor would never end. Here the block fails at once and `go` tries it again, at most --max-retries
            # times. 2.60 names no parameter for it yet (ray_remote_args, deprecated for 2.64, is how it is given).
            return {
                "fn": stage,
                "fn_constructor_args": (config, self.loader, *args),
                "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=size),
                "num_cpus": plan.actor_cpus,
                "num_gpus": gpus,
                "max_task_retries": 0,
            }

        ds = todo.repartition(target_num_rows_per_block=plan.block_rows)
        ds = ds.map(decode, fn_kwargs={"config": config, "root": root}, num_cpus=0.5)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", category=DeprecationWarning)
            ds = ds.map(**pool(CaptionStage, plan.vlm_gpus, plan.vlms))
            ds = ds.map(**pool(GenerateStage, plan.generator_gpus, plan.generators, self.item_timeout_s))
            ds = ds.map(**pool(SelectStage, plan.vlm_gpus, plan.vlms))
        return ds.map_batches(
            finish,
            fn_kwargs={"out": self.out.url, "fps": config.video.fps, "run_id": run_id},
            batch_size=plan.block_rows,
            num_cpus=0.5,
            batch_format="numpy",
        )

    def go(self, todo: Any, stats: RunStats, plan: Plan, on_outcome: Callable[..., None], echo: Callable[[str], None]) -> None:
        """Stream the stages, counting each outcome into `stats` (`on_outcome(stats, failed_id, reason)`); then the
        items lost with their actors (no record from this pass: an anti-join against its index parts) again, at
        most `max_retries` times."""
        run_id = uuid.uuid4().hex[:12]
        for attempt in range(1 + self.max_retries):
            for batch in self.stream(todo, plan, run_id).iter_batches(batch_size=None, batch_format="pyarrow"):
                for outcome in batch.select(["status", "id", "reason"]).to_pylist():
                    failed = outcome["status"] == "failed"
                    stats.succeeded += not failed
                    stats.failed += failed
                    on_outcome(stats, outcome["id"] if failed else None, outcome["reason"] if failed else None)
            todo, lost = self.lost(todo, run_id)
            if not lost or attempt == self.max_retries:
                return
            echo(
                f"bulk: {lost} items lost with their actors (a process or a node gone); again ({attempt + 1}/{self.max_retries})"
            )

    def lost(self, todo: Any, run_id: str) -> tuple[Any, int]:
        """The rows of `todo` that this run has no record of, and how many."""
        import ray.data

        parts = [path for path in self.out.child("index").files(".parquet") if f"/part-{run_id}-" in path]
        if parts:
            done = ray.data.read_parquet(parts, filesystem=self.out.fs).select_columns(["key"])
            todo = todo.join(done, join_type="left_anti", num_partitions=JOIN_PARTITIONS, on=("key",))
        todo = todo.materialize()
        return todo, todo.count()

    def reports(self, scanned: ScannedManifest, stats: RunStats | None, elapsed_s: float) -> dict[str, Any]:
        """index-based reports, made in a Ray task (it reads every index row; the driver does not): the summary."""
        import ray

        from f2f.bulk.report import write_reports

        this_run = {"succeeded": stats.succeeded if stats else 0, "failed": stats.failed if stats else 0, "seconds": elapsed_s}
        task = ray.remote(write_reports).options(num_cpus=0.5)
        return ray.get(task.remote(self.out.url, scanned.rows, this_run))


def _latest(group: Any) -> Any:
    """The latest record of one key (the most attempts; a success or a refusal is always the last)."""
    import pyarrow.compute as pc

    position = pc.index(group["attempts"], pc.max(group["attempts"])).as_py()
    return group.slice(position, 1)


def _done(row: dict[str, Any], max_retries: int) -> bool:
    """Whether a row's latest record ends its work: succeeded, can only fail, or had its retries."""
    status = row.get("status")
    if status is None:
        return False
    return status == "succeeded" or not row["retry"] or row["attempts"] > max_retries
