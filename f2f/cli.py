"""The `f2f` command line.

Errors a user can cause (bad image, bad text, bad config, no backend) print
one line, ``f2f: error: <field>: <rule> (got <value>)``, and exit with
status 2; never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from PIL import Image

from f2f import quiet
from f2f.align import align
from f2f.backends import build_backends, force_offline, make_tiny
from f2f.bulk.command import main as bulk_command
from f2f.catalogue import Checkpoint, load_catalogue, stage_checkpoint, verify_folder
from f2f.cli_group import EXIT_INTERRUPTED, EXIT_USAGE, F2FGroup  # noqa: F401  (the exit statuses are part of this module's interface)
from f2f.config import config_to_yaml, describe_text, load_config, nested, suggest_key
from f2f.config import describe as describe_config
from f2f.errors import F2FError, InvalidConfig, InvalidImage, InvalidInput
from f2f.eval.command import main as eval_command
from f2f.imageio import open_image
from f2f.pipeline import run_edit
from f2f.protocols import Progress
from f2f.request import check_edit
from f2f.result import write_atomic, write_outputs
from f2f.serving import RAY_LOOPBACK_ENV
from f2f.serving.deployments.serve_file import http_address, read_serve_config


@click.group(cls=F2FGroup)
@click.version_option(package_name="f2f", prog_name="f2f")
def main() -> None:
    """Frame2Frame: edit images through image-to-video generation."""


_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="YAML config file (see `f2f config show`)."
)
_profile_option = click.option("--profile", help="Model profile from the catalogue (`f2f models list`); `tiny` runs on any CPU.")
_models_option = click.option(
    "--models", "models_dir", type=click.Path(file_okay=False, path_type=Path), help="Folder of the profile's staged checkpoints."
)


def _overrides(**values: Any) -> dict[str, Any]:
    """CLI flags as config overrides; dotted keys nest ("vlm.backend"); None means not given."""
    return nested(values)


@main.command("edit")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("text")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the outputs.")
@_config_option
@_profile_option
@_models_option
@click.option("--vlm-backend", type=click.Choice(["vllm", "transformers", "openai"]), help="Overrides vlm.backend.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Seed of the first video (default: config, else random).")
@click.option("--save-frames", is_flag=True, help="Also write the candidate frames to OUT/candidates/.")
@click.option(
    "--mask",
    "mask_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the edit may happen: a PNG with alpha (transparent = edit) or one channel (white = edit), IMAGE's size.",
)
@click.option("--mask-mode", type=click.Choice(["latent", "composite"]), help="Overrides mask.mode.")
def edit_command(
    image: Path,
    text: str,
    out_dir: Path,
    config_path: Path | None,
    profile: str | None,
    models_dir: Path | None,
    vlm_backend: str | None,
    seed: int | None,
    save_frames: bool,
    mask_path: Path | None,
    mask_mode: str | None,
) -> None:
    """Edit IMAGE as TEXT asks; write edited.png, collage.png, video.mp4 and result.json to OUT."""
    flags = _overrides(profile=profile, models_dir=models_dir, seed=seed, **{"vlm.backend": vlm_backend, "mask.mode": mask_mode})
    config = load_config(config_path, flags)
    request = check_edit(image, text, config, mask=mask_path)
    printer = _Printer()
    printer.say("loading models" + (f" (profile {config.profile})" if config.profile else ""))
    force_offline()
    _quiet_model_libraries()
    with build_backends(config) as backends:
        result = asyncio.run(run_edit(request, backends, progress=printer, keep_frames=True))
    for path in write_outputs(result, out_dir, save_frames, video_fps=config.video.fps):
        click.echo(f"wrote {path}")
    click.echo(f"status: {result.status}  frame: {result.outcome.frame}  seed: {result.seed}")
    click.echo(f"caption: {result.caption}" + ("  (fallback: the VLM's caption was unusable)" if result.caption_fallback else ""))


_OUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_ASPECT_TOLERANCE = 0.01  # an edit at another size may differ from the source's aspect ratio by rounding only


@main.command("align")
@click.argument("edited", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The aligned image: .png, .jpg, .webp.",
)
@click.option("--mode", type=click.Choice(["off", "auto", "always"]), help="Overrides align.mode (default: the config's, auto).")
@_config_option
def align_command(edited: Path, source: Path, out_file: Path, mode: str | None, config_path: Path | None) -> None:
    """Undo the camera drift of EDITED, an edit of SOURCE made by any tool: write OUT, print the record (JSON).

    An EDITED of another size but SOURCE's aspect ratio is first resized to SOURCE's size (LANCZOS; the record's
    `resized_from` says so); another aspect ratio is an error. When the alignment is not applied, OUT is EDITED as
    read (at SOURCE's size) and the record says why (`f2f.align`).
    """
    image_format = _OUT_FORMATS.get(out_file.suffix.lower())
    if image_format is None:
        raise InvalidInput("--out", str(out_file), f"must end in {', '.join(_OUT_FORMATS)}")
    config = load_config(config_path, _overrides(**{"align.mode": mode}))
    reference = open_image(source, config.input, field="source")
    image = open_image(edited, config.input, field="edited")
    aligned, record = align(_at_size(image, reference.size), reference, config.align)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_file, lambda f: aligned.save(f, format=image_format))
    resized_from = list(image.size) if image.size != reference.size else None
    click.echo(json.dumps({**record.to_json(), "resized_from": resized_from, "out": str(out_file)}, indent=2))


def _at_size(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` at `size` (LANCZOS); InvalidImage naming `edited` when its aspect ratio is another."""
    if image.size == size:
        return image
    ratio, wanted = image.width / image.height, size[0] / size[1]
    if abs(ratio - wanted) > _ASPECT_TOLERANCE * wanted:
        rule = f"must have the source's aspect ratio ({size[0]}x{size[1]}) to be resized onto it"
        raise InvalidImage("edited", f"{image.width}x{image.height}", rule)
    return image.resize(size, Image.Resampling.LANCZOS)


def _quiet_model_libraries() -> None:
    """Warnings and errors only from the model libraries: the CLI prints its own progress."""
    quiet.model_libraries()


class _Printer:
    """Progress on stderr: the stage, the denoising step i/n and the time since the start."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def __call__(self, event: Progress) -> None:
        step = f" step {event.step}/{event.total}" if event.total else ""
        self.say(f"{event.stage}{step}", transient=bool(self.tty and event.total and event.step != event.total))

    def say(self, text: str, transient: bool = False) -> None:
        elapsed = time.perf_counter() - self.start
        click.echo(f"[{elapsed:7.1f}s] {text}", err=True, nl=False)
        click.echo("\r" if transient else "\n", err=True, nl=False)


@main.group("config")
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("show")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_profile_option
@_models_option
@click.option(
    "--describe",
    is_flag=True,
    help="Every key with its type, allowed values, limits, default (and value here, where it differs) and description.",
)
def config_show(file: Path | None, profile: str | None, models_dir: Path | None, describe: bool) -> None:
    """Print the effective config: the defaults, the profile's values, FILE, then the flags."""
    config = load_config(file, _overrides(profile=profile, models_dir=models_dir))
    click.echo(describe_text(describe_config(), config) if describe else config_to_yaml(config), nl=False)


@config_group.command("explain")
@click.argument("key", required=False)
def config_explain(key: str | None) -> None:
    """Describe KEY (dotted: generator.vae_tiling; a section: each of its keys), or every key: type, default, rule."""
    docs = describe_config()
    if key is not None:
        docs = [d for d in docs if d.key == key or d.key.startswith((f"{key}.", f"{key}[]."))]
    if not docs:
        match = suggest_key(key)
        hint = f"did you mean {match}?" if match else "`f2f config explain` lists every key"
        raise InvalidConfig("KEY", key, f"unknown config key ({hint})")
    click.echo(describe_text(docs), nl=False)


@main.group("models")
def models_group() -> None:
    """The model catalogue: list profiles, build tiny checkpoints, stage and verify real ones."""


@models_group.command("list")
def models_list() -> None:
    """Profiles and the checkpoints they use: family, licence, weights' memory, origin."""
    catalogue = load_catalogue()
    for name, profile in catalogue.profiles.items():
        click.echo(f"{name}: {profile.description}")
        for role, ckpt in catalogue.checkpoints_of(name).items():
            origin = "built by f2f (random weights)" if ckpt.tiny else f"{ckpt.repo}@{ckpt.revision or '(not pinned)'}"
            memory = f"{ckpt.memory_gib:g} GiB" if ckpt.memory_gib else "-"
            licence = ckpt.licence or ("(random weights)" if ckpt.tiny else "-")
            click.echo(f"  {role:9} {ckpt.dir:30} {ckpt.family or '-':10} {memory:>9}  {licence}  {origin}")
    for name, ckpt in catalogue.checkpoints.items():
        if ckpt.role == "metric":
            click.echo(f"metric checkpoint {name} (f2f eval; stage with --checkpoint {name}): {ckpt.repo}@{ckpt.revision}")


@models_group.command("make-tiny")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1), help="Seed of the random weights.")
@click.option("--verbose", is_flag=True, help="Let transformers and diffusers print their warnings and progress bars.")
def models_make_tiny(out_dir: Path, seed: int, verbose: bool) -> None:
    """Write random-weight tiny checkpoints of the real architectures into OUT_DIR."""
    quiet.model_libraries(verbose)
    for name, path in make_tiny(out_dir, seed).items():
        click.echo(f"{name}: {path}")


_checkpoint_option = click.option(
    "--checkpoint", help="One checkpoint of the catalogue by name (e.g. the metric clip-vit-base-patch32)."
)


@models_group.command("verify")
@click.argument("models_dir", type=click.Path(path_type=Path))
@click.option(
    "--profile", help="Verify this profile's checkpoints, each folder required (default: every folder MODELS_DIR holds)."
)
@_checkpoint_option
def models_verify(models_dir: Path, profile: str | None, checkpoint: str | None) -> None:
    """Check the checkpoints in MODELS_DIR: missing, extra and mismatched files (sha256).

    Staged checkpoints are checked against the catalogue (and their manifest), tiny ones against what
    `f2f models make-tiny` wrote. Exit status 1 when one is not ok.
    """
    reports = [
        verify_folder(models_dir / ckpt.dir, ckpt, progress=lambda m: click.echo(m, err=True))
        for ckpt in _checkpoints_to_verify(models_dir, profile, checkpoint)
    ]
    for report in reports:
        click.echo("\n".join(report.lines()))
    if not all(r.ok for r in reports):
        sys.exit(1)


def _checkpoints_to_verify(models_dir: Path, profile: str | None, checkpoint: str | None) -> list[Checkpoint]:
    """The one checkpoint, the profile's, or else every catalogue checkpoint whose folder MODELS_DIR holds."""
    if not models_dir.is_dir():
        raise InvalidConfig("models_dir", str(models_dir), "folder missing")
    catalogue = load_catalogue()
    if checkpoint is not None:
        if checkpoint not in catalogue.checkpoints:
            raise InvalidConfig("--checkpoint", checkpoint, f"unknown checkpoint; known: {', '.join(catalogue.checkpoints)}")
        return [catalogue.checkpoints[checkpoint]]
    if profile is not None:
        return list(catalogue.checkpoints_of(profile).values())
    present = [c for c in catalogue.checkpoints.values() if (models_dir / c.dir).is_dir()]
    if not present:
        rule = "holds no checkpoint folder of the catalogue (`f2f models list`); --profile P lists what P needs"
        raise InvalidConfig("models_dir", str(models_dir), rule)
    return present


@models_group.command("stage")
@click.argument("models_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--profile", help="The profile whose checkpoints to download.")
@_checkpoint_option
def models_stage(models_dir: Path, profile: str | None, checkpoint: str | None) -> None:
    """On a connected host: download a profile's (or one checkpoint's) pinned files into MODELS_DIR, write their manifests."""
    if not (profile or checkpoint):
        raise InvalidConfig("--profile", None, "give --profile or --checkpoint: what to stage")
    reports = [stage_checkpoint(ckpt, models_dir / ckpt.dir) for ckpt in _real_checkpoints(profile, checkpoint)]
    for report in reports:
        click.echo("\n".join(report.lines()))
    if not all(r.ok for r in reports):
        sys.exit(1)


def _real_checkpoints(profile: str | None, checkpoint: str | None = None) -> list[Checkpoint]:
    catalogue = load_catalogue()
    if checkpoint is not None:
        if checkpoint not in catalogue.checkpoints:
            raise InvalidConfig("--checkpoint", checkpoint, f"unknown checkpoint; known: {', '.join(catalogue.checkpoints)}")
        return [catalogue.checkpoints[checkpoint]]
    checkpoints = catalogue.checkpoints_of(profile).values() if profile else catalogue.checkpoints.values()
    real = [c for c in checkpoints if not c.tiny]
    if profile and not real:
        raise InvalidConfig("profile", profile, "has only tiny checkpoints, which f2f builds itself (f2f models make-tiny)")
    return real


# --- f2f serve and f2f submit ---------------------------------------------------------------------

LOCAL_SERVE_CONFIG = Path(__file__).resolve().parent / "data" / "serve-local.yaml"  # also serve/local.yaml
METRICS_PORT = 8080  # Ray's metrics export port, as KubeRay sets it (observability/podmonitor.yaml scrapes it)


@main.command("serve")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--host", help="Bind address (overrides the file's http_options.host).")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    envvar="F2F_PORT",
    help="HTTP port (overrides the file's http_options.port). Also $F2F_PORT; the flag wins over it.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=METRICS_PORT,
    show_default=True,
    envvar="F2F_METRICS_PORT",
    help="Port of Ray's Prometheus metrics (/metrics); 0 lets Ray pick one. Also $F2F_METRICS_PORT.",
)
@click.option("--verbose", is_flag=True, help="Let Ray's workers, Celery and the model libraries print banners and bars.")
def serve_command(config: Path | None, host: str | None, port: int | None, metrics_port: int, verbose: bool) -> None:
    """Run the HTTP API from a Serve config file (default: serve/local.yaml, the tiny profile) until Ctrl-C or SIGTERM.

    Starts a local Ray if none is running, on loopback only (single node, no token auth, no usage stats), with
    its metrics on --metrics-port; prints the HTTP and the metrics URLs. The server runs in a session of its
    own: Ctrl-C, or a SIGTERM to this command's process group, reaches this process only, which stops the
    server gracefully (Ray's processes would otherwise die at once and leave Serve waiting for them).
    """
    path = config or LOCAL_SERVE_CONFIG
    if importlib.util.find_spec("ray") is None:
        raise InvalidConfig("serve", "ray", "needs Ray Serve: pip install 'f2f[serve]'")
    for key, value in RAY_LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)  # read by Ray when it starts, and by every Ray process
    force_offline()
    # 1. Check the addresses before Ray starts: a port in use is one line, not Ray's traceback
    http_host, http_port = http_address(read_serve_config(path), host, port)
    from_env = click.get_current_context().get_parameter_source("port") == click.core.ParameterSource.ENVIRONMENT
    port_field = ("F2F_PORT" if from_env else "--port") if port else f"{path}: http_options.port"
    host_field = "--host" if host else f"{path}: http_options.host"
    _check_port_free(http_host, http_port, port_field, fix="--port", host_field=host_field)
    if metrics_port:
        _check_port_free("127.0.0.1", metrics_port, "--metrics-port", fix="--metrics-port, or 0 to let Ray pick")
    # 2. Serve in a session of our own until this process is told to stop
    quiet.model_libraries(verbose)  # the app builder may write tiny checkpoints here
    quiet.ray_driver(verbose)
    status = _in_own_session(lambda: _serve(path, host, port, metrics_port, verbose))
    if status:
        sys.exit(status)


def _serve(path: Path, host: str | None, port: int | None, metrics_port: int, verbose: bool) -> None:
    """Start Ray and the applications; serve until SIGTERM, then stop Serve and Ray."""
    import ray
    from ray import serve

    from f2f.serving.app import run_config_file

    def stop(signum: int, _: Any) -> None:
        raise KeyboardInterrupt  # `f2f serve` forwards Ctrl-C and SIGTERM as SIGTERM (`_in_own_session`)

    started = time.perf_counter()
    runtime_env = quiet.ray_runtime_env(verbose, celery_consumers=True)  # the edit worker's queue consumer
    ray.init(include_dashboard=False, configure_logging=False, _metrics_export_port=metrics_port or None, runtime_env=runtime_env)
    signal.signal(signal.SIGTERM, stop)  # after ray.init, which installs its own
    try:
        url = run_config_file(path, host=host, port=port)
        click.echo(f"f2f is serving at {url} (ready in {time.perf_counter() - started:.1f}s); Ctrl-C stops it", err=True)
        exported = ray.nodes()[0]["MetricsExportPort"]
        click.echo(f"metrics (Prometheus) at http://127.0.0.1:{exported}/metrics", err=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("shutting down", err=True)
    finally:
        serve.shutdown()
        ray.shutdown()


def _in_own_session(server: Callable[[], None]) -> int:
    """Run `server` in a child process in a new session (so it, and the Ray processes it starts, are in no
    process group of ours), forward each SIGINT and SIGTERM to it as SIGTERM, wait; its exit status.

    Ray blocks SIGINT in the processes it starts (the GCS, the raylet, ...) but not SIGTERM: sent to the whole
    group, SIGTERM killed them at once, the replicas went without their graceful stop, and `serve.shutdown`
    waited its 30 s for a controller that was gone. The child gets SIGTERM when this process dies (Linux).
    """
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        status = 0
        try:
            os.setsid()
            _terminate_with(parent)
            server()
        except F2FError as exc:
            click.echo(f"f2f: error: {exc}", err=True)
            status = EXIT_USAGE
        except BaseException:
            traceback.print_exc()
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)  # never back into the caller's stack: it belongs to the parent

    def forward(signum: int, _: Any) -> None:
        os.kill(child, signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    _, status = os.waitpid(child, 0)  # retried after each forward (PEP 475)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says it


def _terminate_with(parent: int) -> None:
    """SIGTERM this process when `parent` exits, killed or not (Linux's PR_SET_PDEATHSIG); exit if it is gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def _check_port_free(host: str, port: int, field: str, fix: str, host_field: str = "host") -> None:
    """InvalidConfig naming `field` and the flag that fixes it when `host:port` cannot be bound now."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: a port in TIME_WAIT is free
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise InvalidConfig(host_field, host, f"cannot listen there ({exc.strerror or exc})") from None
            rule = f"the port is in use on {host} ({exc.strerror}); give another with {fix}"
            raise InvalidConfig(field, port, rule) from None


_URL_OPTION = click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The f2f service.")
_KEY_OPTION = click.option("--api-key", envvar="F2F_API_KEY", help="The service's API key (default: $F2F_API_KEY).")


@main.command("submit")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("text")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the outputs.")
@_URL_OPTION
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Seed of the first video (default: the server's).")
@click.option("--seeds", help="Seeds of the videos, comma-separated (one video each; instead of --seed and --n).")
@click.option("--n", "n", type=click.IntRange(1), help="Videos (seeds) to try (default: the server's).")
@click.option("--steps", type=click.IntRange(1), help="Denoising steps per video (default: the server's).")
@click.option("--num-frames", type=click.IntRange(2), help="Frames per video (default: the server's).")
@click.option("--guidance", type=float, help="Classifier-free guidance scale (default: the server's).")
@click.option(
    "--mask",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Where the edit may happen: a PNG with alpha (transparent = edit) or one channel (white = edit), IMAGE's size.",
)
@click.option("--mask-mode", type=click.Choice(["latent", "composite"]), help="With --mask (default: the server's).")
@click.option("--output-format", type=click.Choice(["png", "jpeg", "webp"]), help="Format of OUT/edited.* (default: png).")
@click.option("--size", help="Size of OUT/edited.*: WIDTHxHEIGHT at the source's aspect ratio (default: the source's).")
@click.option("--video/--no-video", default=True, show_default=True, help="Keep and download the chosen clip.")
@_KEY_OPTION
def submit_command(
    image: Path,
    text: str,
    out_dir: Path,
    url: str,
    video: bool,
    api_key: str | None,
    mask: Path | None,
    output_format: str | None,
    size: str | None,
    **options: Any,
) -> None:
    """Edit IMAGE as TEXT asks on a running service: submit, follow the progress, write the outputs to OUT.

    OUT gets what `f2f edit` writes (edited image, collage.png, video.mp4, result.json) and job.json, the job.
    """
    from f2f.client import Client, ServiceError

    client = Client(url, api_key=api_key)
    printer = _Printer()
    job = client.submit(image, text, mask=mask, return_video=video, **options)
    printer.say(f"submitted job {job['id']}")

    def on_event(name: str, data: dict[str, Any]) -> None:
        if name == "progress":
            printer(Progress(data["stage"], data["step"], data["total"]))
        elif name in ("stage", "status"):
            printer.say(str(data[name]))

    job = client.follow(job["id"], on_event)
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        raise ServiceError(f"the edit {job['status']}: {error.get('message', 'no reason given')}", error.get("code"))
    for path in client.download(job, out_dir, output_format, size):
        click.echo(f"wrote {path}")
    result = job["result"]
    click.echo(f"status: {result['status']}  frame: {result['selected_frame']}  seed: {result['seed']}")
    click.echo(
        f"caption: {result['caption']}" + ("  (fallback: the VLM's caption was unusable)" if result["caption_fallback"] else "")
    )


@main.group("jobs")
def jobs_group() -> None:
    """Your jobs on a running service: list them, show one, cancel one, select another frame of one."""


@jobs_group.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]), help="Only these.")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True, help="Jobs per page.")
@click.option("--after", help="The last id of the previous page: list the jobs older than it.")
@_URL_OPTION
@_KEY_OPTION
def jobs_list(status: str | None, limit: int, after: str | None, url: str, api_key: str | None) -> None:
    """Your jobs, newest first: id, status, when made (UTC), prompt."""
    from f2f.client import Client

    page = Client(url, api_key=api_key).jobs(status, after, limit)
    for job in page["data"]:
        made = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(job["created_at"]))
        click.echo(f"{job['id']}  {job['status']:<9}  {made}  {job['prompt']}")
    if page["has_more"]:
        click.echo(f"more: f2f jobs list --after {page['last_id']}", err=True)


@jobs_group.command("show")
@click.argument("job_id")
@_URL_OPTION
@_KEY_OPTION
def jobs_show(job_id: str, url: str, api_key: str | None) -> None:
    """The job JOB_ID as the API shows it (JSON)."""
    from f2f.client import Client

    click.echo(json.dumps(Client(url, api_key=api_key).job(job_id), indent=2))


@jobs_group.command("cancel")
@click.argument("job_id")
@_URL_OPTION
@_KEY_OPTION
def jobs_cancel(job_id: str, url: str, api_key: str | None) -> None:
    """Cancel JOB_ID: a queued job at once, a running one at its next stage or denoising step."""
    from f2f.client import Client

    job = Client(url, api_key=api_key).cancel(job_id)
    click.echo(f"job {job_id}: {job['status']}" + (" (cancel requested)" if job["status"] == "running" else ""))


@jobs_group.command("select")
@click.argument("job_id")
@click.argument("label", type=click.IntRange(0))
@_URL_OPTION
@_KEY_OPTION
def jobs_select(job_id: str, label: int, url: str, api_key: str | None) -> None:
    """Make frame LABEL of a succeeded job's chosen clip its result (0 is the source, 1..N the collage's tiles)."""
    from f2f.client import Client

    selection = Client(url, api_key=api_key).select(job_id, label)["selection"]
    click.echo(f"job {job_id}: label {selection['label']} (frame {selection['frame']}) is now its result")


@main.group("keys")
def keys_group() -> None:
    """API keys of the service (a YAML file of token hashes; see `auth.keys_file`)."""


@keys_group.command("new")
@click.argument("name")
@click.option("--file", "keys_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The keys file.")
def keys_new(name: str, keys_file: Path) -> None:
    """Add key NAME to the keys file (created if missing, mode 0600) and print its token: the only time it is shown."""
    from f2f.serving.api.auth import add_key

    if not keys_file.parent.is_dir():
        raise InvalidConfig("--file", str(keys_file), f"its folder {keys_file.parent} is missing; create it first")
    try:
        token = add_key(keys_file, name)
    except OSError as exc:
        raise InvalidConfig("--file", str(keys_file), f"cannot write it ({exc.strerror})") from None
    click.echo(f"added key {name!r} to {keys_file}; its token (shown once, store it now):", err=True)
    click.echo(token)


main.add_command(bulk_command, name="bulk")
main.add_command(eval_command, name="eval")


if __name__ == "__main__":
    main()
