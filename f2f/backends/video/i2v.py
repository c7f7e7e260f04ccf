"""Image-to-video generation through a diffusers pipeline: what every video family shares.

One instance holds one loaded pipeline and runs one video job at a time (a
lock); jobs run in a worker thread so the event loop stays free: seeds in
batches of `max_batch_seeds`, progress per denoising step, cancellation
between steps, the memory switches, `vae_tiling: auto`, and out-of-memory
errors that leave the instance usable. The checkpoint is a LOCAL diffusers
folder; nothing is ever downloaded.

A family (one module, e.g. `f2f.backends.video.cogvideox`) supplies only what
differs, as a `Family`:

- `facts`: what the core knows of it (`f2f.families.FamilyFacts`: the
  diffusers class that recognises its checkpoints, their canvas and frame
  rules, its `video` defaults, whether it keeps latents under a mask);
- `call_arguments`: the pipeline call's family-specific arguments;
- `split`: how one video is split over several processes (None: refused);
- `speed`: the `generator.speed` switches it supports (others are refused);
- `mask_latents`: how a caller's mask keeps the latents outside it at the
  source's (`f2f.backends.video.latent_masks`). Every family has it:
  CogVideoX (both layouts), Wan (2.1, 2.2 A14B, TI2V), LTX-Video and
  ChronoEdit (its facts' `keeps_latents`); the request's check refuses a
  latent mask for a family without it, for temporal reasoning cut short
  (ChronoEdit's latents change length mid-way), or for a split generator (`f2f.request.check_edit`);
- `check`: its own `video` rules beyond the shared canvas and frame rules
  (`check_video`; by default the temporal-reasoning fields, ChronoEdit's, stay null);
- `image_per_prompt`, `one_seed_per_call`, `set_shift`, `split_axes`,
  `split_divides_tokens`, `requires`: see `Family`.

Adding a family: the README's "Adding a video family".

torch and diffusers are imported when an instance is made, not when this
module is; a missing one is `BackendNotConfigured` naming the extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

from f2f.backends import resolve_device
from f2f.backends.video.latent_masks import Blend, MaskLatents
from f2f.backends.video.lora import check_loras, fuse_loras
from f2f.backends.video.speedups import (
    SWITCHES,
    apply_speedups,
    attention_kernel,
    check_family_speed,
    check_speed,
    fit_cache,
)
from f2f.config import Device, DType, GeneratorConfig, LoraConfig, MaskConfig, SpeedConfig, VideoConfig
from f2f.errors import BackendNotConfigured, EditCancelled, GeneratorOutOfMemory, InvalidConfig
from f2f.families import CheckpointSpec, FamilyFacts
from f2f.families import inspect_checkpoint as inspect_facts
from f2f.pipeline import check_clips
from f2f.protocols import CancelToken, Frames, Progress, ProgressCallback

if TYPE_CHECKING:
    import torch

    from f2f.backends.video.parallel import ParallelGroups
    from f2f.backends.video.previews import PreviewMap

# The families by name: the module that defines each one's FAMILY (imported when a checkpoint or a config names it).
FAMILIES = {
    "cogvideox": "f2f.backends.video.cogvideox",
    "wan": "f2f.backends.video.wan",
    "ltx": "f2f.backends.video.ltx",
    "chronoedit": "f2f.backends.video.chronoedit",
}
SPLIT_AXES = frozenset({"cfg", "ulysses"})
logger = logging.getLogger("f2f.backends")
_FIELD = "generator.model_path"
_INSTALL = "pip install 'f2f[video]'"


def no_temporal_reasoning(family: str, spec: CheckpointSpec, settings: VideoConfig) -> None:
    """`Family.check` of a family without temporal reasoning: its two `video` fields stay null."""
    for name in ("enable_temporal_reasoning", "num_temporal_reasoning_steps"):
        if getattr(settings, name) is not None:
            rule = f"the {family} family has no temporal reasoning (leave it null; ChronoEdit has it)"
            raise InvalidConfig(f"video.{name}", getattr(settings, name), rule)


@dataclass(frozen=True)
class Family:
    """What one kind of image-to-video checkpoint does differently on torch (see the module docstring)."""

    facts: FamilyFacts  # what the core knows of it: classes, checkpoint rules, defaults (f2f.families)
    call_arguments: Callable[[CheckpointSpec, VideoConfig], dict[str, Any]]  # the call's family-specific arguments
    image_per_prompt: bool = True  # the call takes a list of images, one per prompt; False: one image for the batch
    one_seed_per_call: bool = False  # the call takes one torch.Generator, not a list (generator.max_batch_seeds must be 1)
    set_shift: Callable[[Any, float | None], None] | None = None  # apply video.shift (None: its own) to a pipeline; None: refused
    split: Callable[[Any, ParallelGroups], None] | None = None  # make a loaded pipeline run split over the ranks
    split_axes: frozenset[str] = SPLIT_AXES  # the generator.parallel axes (cfg, ulysses) that split supports
    split_divides_tokens: bool = False  # the split cuts the video tokens into equal shards: their count must divide
    speed: frozenset[str] = SWITCHES  # the generator.speed switches and cache modes it supports (speedups.SWITCHES)
    requires: tuple[str, ...] = ()  # modules its pipeline imports besides torch, diffusers, transformers (e.g. Wan: ftfy)
    mask_latents: MaskLatents | None = None  # how a mask keeps the source's latents (`latent_masks`); None: keeps_latents False
    check: Callable[[str, CheckpointSpec, VideoConfig], None] = no_temporal_reasoning  # its own `video` rules (check_video)

    def __post_init__(self) -> None:
        if self.facts.keeps_latents != (self.mask_latents is not None):  # the request's check trusts the facts
            raise ValueError(f"the {self.name} family's mask_latents must be set exactly when its facts keep latents")

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def pipeline_class(self) -> str:
        return self.facts.pipeline_class


def inspect_checkpoint(path: Path, asked: str | None = None) -> tuple[Family, CheckpointSpec]:
    """The checkpoint's family and what it can generate (`f2f.families.inspect_checkpoint`)."""
    facts, spec = inspect_facts(path, asked)
    return importlib.import_module(FAMILIES[facts.name]).FAMILY, spec


class DiffusersVideoGenerator:
    """A `f2f.protocols.VideoGenerator` over a local diffusers image-to-video checkpoint of any family in FAMILIES.

    `device`/`dtype` "auto": cuda + bfloat16 when CUDA is available, else cpu +
    float32. `vae_slicing`, `vae_tiling` and `cpu_offload` are memory switches
    (`apply_memory_switches`); `cpu_offload` needs cuda. `speed` holds the
    speed-ups (`f2f.backends.video.speedups`). Seeds run in batches of
    `max_batch_seeds`; a seed's frames do not depend on its batch. `mask`
    holds how a caller's mask is kept (`f2f.backends.video.latent_masks`).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: Device = "auto",
        dtype: DType = "auto",
        vae_slicing: bool = False,
        vae_tiling: bool | Literal["auto"] = False,
        cpu_offload: bool = False,
        max_batch_seeds: int = 1,
        speed: SpeedConfig | None = None,
        parallel: ParallelGroups | None = None,
        family: str | None = None,
        lora: Sequence[LoraConfig] = (),
        mask: MaskConfig | None = None,
    ) -> None:
        torch, diffusers = _libraries()
        if max_batch_seeds < 1:
            raise InvalidConfig("generator.max_batch_seeds", max_batch_seeds, "must be at least 1")
        self.model_path = Path(model_path)
        self.family, self.spec = inspect_checkpoint(self.model_path, family)
        _check_requires(self.family)
        device, dtype = resolve_device("generator", device, dtype, torch.cuda.is_available())
        if cpu_offload and device != "cuda":
            raise InvalidConfig("generator.cpu_offload", True, "offloading to the CPU needs device cuda")
        self.device, self.dtype = torch.device(device), getattr(torch, dtype)
        self.speed = speed or SpeedConfig()
        self.mask = mask or MaskConfig()
        self.max_batch_seeds = max_batch_seeds
        experts = 2 if self.spec.options.get("two_experts") else 1
        check_family_speed(self.speed, self.family.name, self.family.speed, experts)
        check_speed(self.speed, self.device)
        self._check_family_supports(parallel)
        pipeline_class = getattr(diffusers, self.family.pipeline_class)
        self.lora = tuple(lora)
        lora_states = check_loras(pipeline_class, self.model_path, self.lora)
        self._lock = threading.Lock()  # one video job at a time; taken in the worker thread
        self.parallel = parallel
        self.decodes = parallel is None or parallel.rank == 0  # a split video is encoded and decoded by rank 0 alone
        no_text_encoder = {} if self.decodes else {"text_encoder": None, "tokenizer": None}
        pipe = pipeline_class.from_pretrained(
            self.model_path, **{_dtype_keyword(): self.dtype}, **no_text_encoder, local_files_only=True
        )
        pipe.set_progress_bar_config(disable=True)
        fuse_loras(pipe, self.lora, lora_states)
        del lora_states  # fused: the adapters' tensors are not kept
        apply_memory_switches(pipe, self.device, vae_slicing=vae_slicing, vae_tiling=vae_tiling, cpu_offload=cpu_offload)
        apply_speedups(pipe, self.speed)
        if parallel is not None and self.family.split is not None:
            self.family.split(pipe, parallel)
        self._pipe: Any = pipe
        self._preview_map: PreviewMap | None = None  # latent channels -> RGB, the first time a call asks for previews

    @classmethod
    def from_config(
        cls, cfg: GeneratorConfig, parallel: ParallelGroups | None = None, mask: MaskConfig | None = None
    ) -> DiffusersVideoGenerator:
        """The generator that the `generator` config section describes (`parallel`: this process's rank groups, `mask`:
        the `mask` section)."""
        if cfg.model_path is None:
            raise InvalidConfig(_FIELD, None, "set it to the local folder of a diffusers image-to-video checkpoint")
        return cls(
            cfg.model_path,
            device=cfg.device,
            dtype=cfg.dtype,
            vae_slicing=cfg.vae_slicing,
            vae_tiling=cfg.vae_tiling,
            cpu_offload=cfg.cpu_offload,
            max_batch_seeds=cfg.max_batch_seeds,
            speed=cfg.speed,
            parallel=parallel,
            family=cfg.family,
            lora=cfg.lora,
            mask=mask,
        )

    def _check_family_supports(self, parallel: ParallelGroups | None) -> None:
        """InvalidConfig naming the seeds per call or the split that this checkpoint's family does not support."""
        name = self.family.name
        if self.family.one_seed_per_call and self.max_batch_seeds > 1:
            rule = f"the {name} family's pipeline takes one random generator per call, so one seed per batch (set it to 1)"
            raise InvalidConfig("generator.max_batch_seeds", self.max_batch_seeds, rule)
        if parallel is None:
            return
        layout = parallel.layout
        if self.family.split is None:
            rule = f"the {name} family cannot split a video over several processes (use cfg 1, ulysses 1)"
            raise InvalidConfig("generator.parallel", f"cfg {layout.cfg} x ulysses {layout.ulysses}", rule)
        for axis in sorted(SPLIT_AXES - self.family.split_axes):
            if getattr(layout, axis) > 1:
                rule = f"the {name} family splits a video only by {' and '.join(sorted(self.family.split_axes))} (set it to 1)"
                raise InvalidConfig(f"generator.parallel.{axis}", getattr(layout, axis), rule)

    def health(self) -> None:
        """Raise RuntimeError once the pipeline is released (the deployments' health checks call this)."""
        if self._pipe is None:
            raise RuntimeError(f"the {self.family.name} generator is closed")

    def close(self) -> None:
        """Release the pipeline (waits for a running job); the instance cannot generate afterwards."""
        with self._lock:
            self._pipe = None
        release_memory(self.device)

    def check_settings(self, settings: VideoConfig) -> None:
        """InvalidConfig naming the `video.*` field this checkpoint cannot generate (`check_video`; once, at load)."""
        split = self.parallel.layout.ulysses if self.parallel is not None else 1
        check_video(self.family, self.spec, settings, sequence_split=split)

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
        preview_every: int | None = None,
    ) -> list[Frames]:
        """One clip of `settings.num_frames` RGB canvas-size frames per seed, in seed order (split: on rank 0; [] elsewhere).

        Progress events `Progress("generate", step, total)` count steps across
        all batches (total = steps x batches) and are delivered on the calling
        event loop's thread, in order, before this returns (an exception in
        `progress` is reported by the loop, not raised here). `cancel` (or
        cancelling the awaiting task) stops the job at the next denoising step
        with `EditCancelled`; the instance stays usable. `mask` (an "L" canvas
        image, 255: free to edit) keeps the latents outside it at the source's
        (`f2f.backends.video.latent_masks`); None is exactly the unmasked call.
        `preview_every` N: every N-th step's event also carries an approximate
        preview (`f2f.backends.video.previews`; rank 0 alone when split; none
        if the map cannot be fitted, logged); the frames are the same with or
        without. Nothing is checked again: the image is the RGB canvas and the
        mask the canvas's (`f2f.canvas`) of a checked request
        (`f2f.request.check_edit`: the caller's settings, a latent mask),
        `settings` the config's video, checked against the checkpoint at load
        (`check_settings`).
        """
        self.health()
        seeds = list(seeds)
        batches = [seeds[i : i + self.max_batch_seeds] for i in range(0, len(seeds), self.max_batch_seeds)]
        job = _Job(image, caption, settings, len(batches), _notifier(progress), cancel, self.parallel is not None, mask)
        job.preview_every = preview_every if self.decodes else None
        try:
            return await asyncio.to_thread(self._run, job, batches)
        except asyncio.CancelledError:
            job.stop.set()  # the thread cannot be killed: stop it at its next step
            raise

    def _run(self, job: _Job, batches: list[list[int]]) -> list[Frames]:
        """Worker thread: every batch in turn, holding the instance's lock."""
        with self._lock:
            self.health()
            pipe = self._pipe
            blend = self._blend(pipe, job, job.mask) if job.mask is not None else None
            if job.preview_every:
                job.render = self._previewer(pipe, job)
            clips: list[Frames] = []
            for index, batch in enumerate(batches):
                job.check_cancelled()
                clips += self._run_batch(pipe, job, index, batch, blend)
            return clips

    def _blend(self, pipe: Any, job: _Job, mask: Image.Image) -> Blend:
        """The mask's reference latents (one VAE encode of the static source clip); GeneratorOutOfMemory if they do not fit."""
        import torch

        try:
            return Blend.prepare(self.family.mask_latents, pipe, job.image, mask, job.settings, self.mask)
        except torch.OutOfMemoryError:
            pass  # raised below, once this frame no longer holds the failed encode's tensors
        release_memory(self.device)
        raise GeneratorOutOfMemory(
            f"encoding the masked source as {job.settings.num_frames} frames at {job.settings.width}x{job.settings.height} "
            f"did not fit in {self.device} memory; ask for fewer frames, or enable generator.cpu_offload"
        )

    def _previewer(self, pipe: Any, job: _Job) -> Callable[[Any, torch.Tensor], Image.Image] | None:
        """(pipe, latents) -> the job's preview image, over the checkpoint's map (fitted or read the first time);
        None, logged, if the map cannot be made: previews never fail an edit."""
        from f2f.backends.video.previews import preview_map, render

        if self._preview_map is None:
            try:
                self._preview_map = preview_map(pipe, self.family, self.spec, self.model_path)
            except Exception:
                logger.exception("the preview map of %s could not be fitted; this call makes no previews", self.model_path)
                return None
        mapping, family, size, frames = self._preview_map, self.family.name, job.image.size, job.settings.num_frames
        return lambda pipe, latents: render(mapping, family, pipe, latents, size, frames)

    def _run_batch(self, pipe: Any, job: _Job, index: int, seeds: list[int], blend: Blend | None) -> list[Frames]:
        """One pipeline call: the same image and caption once per seed, one generator per seed (`blend`: the mask's)."""
        import torch

        settings, n = job.settings, len(seeds)
        generators = [torch.Generator(self.device).manual_seed(seed) for seed in seeds]
        arguments = self.family.call_arguments(self.spec, settings)  # may set the frames it denoises (ChronoEdit)
        if self.family.set_shift is not None:
            self.family.set_shift(pipe, settings.shift)  # null: the checkpoint's, not the last request's
        fit_cache(pipe, self.speed, settings.num_inference_steps)
        try:
            with attention_kernel(self.speed):
                output = pipe(
                    image=[job.image] * n if self.family.image_per_prompt else job.image,
                    prompt=[job.caption] * n,
                    height=settings.height,
                    width=settings.width,
                    num_frames=arguments.pop("num_frames", settings.num_frames),
                    num_inference_steps=settings.num_inference_steps,
                    guidance_scale=settings.guidance_scale,
                    generator=generators[0] if self.family.one_seed_per_call else generators,
                    output_type="pil" if self.decodes else "latent",
                    callback_on_step_end=job.step_callback(index, blend.for_seeds(seeds) if blend else None),
                    **arguments,
                )
        except torch.OutOfMemoryError:
            pipe.maybe_free_model_hooks()
            out_of_memory = True  # raised below, once this frame no longer holds the failed call's tensors
        except BaseException:
            pipe.maybe_free_model_hooks()  # what __call__ would have done at its end (offload hooks, caches)
            raise
        else:
            out_of_memory = False
        if out_of_memory:
            release_memory(self.device)
            raise GeneratorOutOfMemory(
                f"the video did not fit in {self.device} memory: {n} seed(s) of {settings.num_frames} frames at "
                f"{settings.width}x{settings.height}; ask for fewer seeds or frames, or enable generator.vae_tiling "
                "or generator.cpu_offload"
            )
        if not self.decodes:
            return []  # another rank of a split video: rank 0 decodes and returns the frames
        check_clips(output.frames, seeds, settings)
        return [[frame if frame.mode == "RGB" else frame.convert("RGB") for frame in clip] for clip in output.frames]


class _Job:
    """One generate call as the worker thread sees it: inputs, progress, cancellation."""

    def __init__(
        self,
        image: Image.Image,
        caption: str,
        settings: VideoConfig,
        num_batches: int,
        notify: Callable[[Progress], None],
        cancel: CancelToken | None,
        collective: bool = False,
        mask: Image.Image | None = None,
    ) -> None:
        self.image, self.caption, self.settings, self.mask = image, caption, settings, mask
        self.total = settings.num_inference_steps * num_batches
        self.notify, self.cancel = notify, cancel
        self.stop = threading.Event()  # set when the awaiting task is cancelled
        self.collective = collective  # a split video: every rank stops at the same step, or none does
        self.preview_every: int | None = None  # every N-th step's event carries a preview (`render`'s)
        self.render: Callable[[Any, torch.Tensor], Image.Image] | None = None

    def check_cancelled(self) -> None:
        """EditCancelled once the caller's token or the awaiting task was cancelled (on any rank, when split)."""
        wish = self.stop.is_set() or (self.cancel is not None and self.cancel.cancelled)
        if self.collective:
            from f2f.backends.video.parallel import any_rank

            wish = any_rank(wish)
        if wish:
            raise EditCancelled("the edit was cancelled")

    def step_callback(
        self, batch_index: int, blend: Callable[[Any, int, torch.Tensor], torch.Tensor] | None = None
    ) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
        """The pipeline's `callback_on_step_end`: stop if cancelled, else blend the latents (a mask) and report the step,
        with a preview every `preview_every` steps (the latents are only read: the frames stay the same)."""
        offset = batch_index * self.settings.num_inference_steps

        def on_step_end(pipe: Any, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            self.check_cancelled()
            if blend is not None:
                tensors = {**tensors, "latents": blend(pipe, i, tensors["latents"])}
            preview = None
            if self.render is not None and self.preview_every and (i + 1) % self.preview_every == 0:
                preview = self.render(pipe, tensors["latents"])
            self.notify(Progress("generate", offset + i + 1, self.total, preview))
            return tensors

        return on_step_end


def context_parallel(pipe: Any, groups: ParallelGroups) -> None:
    """A family's `split` by diffusers' own context parallelism (`f2f.backends.video.parallel.context_parallel`)."""
    from f2f.backends.video.parallel import context_parallel as split

    split(pipe, groups)


def check_video(family: Family, spec: CheckpointSpec, settings: VideoConfig, sequence_split: int = 1) -> None:
    """InvalidConfig naming the `video.*` field that `spec`'s checkpoint cannot generate, and its rule.

    A fixed canvas takes only its own size; a free one any multiple of the
    checkpoint's size multiple (or a pixel budget the pipeline fits each source
    into). Frames: `frame_step*k + 1`. `shift` only where the family has a
    flow-matching scheduler to apply it to.
    """
    if missing := settings.missing():
        rule = f"must be set: the {family.name} family has no default for it here (set it in the config or the profile)"
        raise InvalidConfig(f"video.{missing[0]}", None, rule)
    width, height = spec.canvas_size
    if spec.fixed_canvas:
        for name, value, wanted in (("width", settings.width, width), ("height", settings.height, height)):
            if value != wanted:
                rule = f"{spec.name} generates only {width}x{height} (set video.width: {width}, video.height: {height})"
                raise InvalidConfig(f"video.{name}", value, rule)
    multiple = spec.size_multiple
    for name in ("width", "height"):
        value = getattr(settings, name)
        if value is not None and value % multiple:
            raise InvalidConfig(f"video.{name}", value, f"{spec.name} needs a multiple of {multiple}")
    if settings.size_multiple is not None and settings.size_multiple % multiple:
        raise InvalidConfig("video.size_multiple", settings.size_multiple, f"{spec.name} needs a multiple of {multiple}")
    if settings.width is None and settings.max_canvas_pixels is not None and settings.max_canvas_pixels < multiple * multiple:
        rule = f"{spec.name} needs room for at least one {multiple}x{multiple} block"
        raise InvalidConfig("video.max_canvas_pixels", settings.max_canvas_pixels, rule)
    step = spec.frame_step
    if (settings.num_frames - 1) % step:
        counts = ", ".join(str(step * k + 1) for k in range(1, 7))
        rule = f"{spec.name} returns exactly {step}k+1 frames ({counts}, ...)"
        raise InvalidConfig("video.num_frames", settings.num_frames, rule)
    if settings.frame_step is not None and settings.frame_step % step:
        rule = f"{spec.name} returns exactly {step}k+1 frames, so video.frame_step must be a multiple of {step}"
        raise InvalidConfig("video.frame_step", settings.frame_step, rule)
    if settings.shift is not None and family.set_shift is None:
        rule = f"the {family.name} family's scheduler has no timestep shift (leave it null)"
        raise InvalidConfig("video.shift", settings.shift, rule)
    if family.split_divides_tokens and sequence_split > 1:
        _check_even_shards(spec, settings, sequence_split)
    family.check(family.name, spec, settings)


def _check_even_shards(spec: CheckpointSpec, settings: VideoConfig, parts: int) -> None:
    """InvalidConfig unless every frame's video tokens ((w / m) x (h / m), m the size multiple) split into `parts`
    equal shards: an explicit canvas must have them, a free one a size multiple that makes them."""
    multiple = spec.size_multiple
    if settings.width is not None:
        tokens = (settings.width // multiple) * (settings.height // multiple)
        if tokens % parts:
            rule = (
                f"{spec.name} split over {parts} ranks cuts each frame's {tokens} video tokens "
                f"({settings.width}/{multiple} x {settings.height}/{multiple}) into equal shards: choose a size whose "
                f"token count divides by {parts}"
            )
            raise InvalidConfig("video.width", settings.width, rule)
    elif (settings.size_multiple or multiple) % (multiple * parts):
        rule = (
            f"{spec.name} split over {parts} ranks cuts the video tokens into equal shards: free canvases need sides "
            f"in multiples of {multiple * parts} ({multiple} x {parts} ranks; set video.size_multiple: {multiple * parts})"
        )
        raise InvalidConfig("video.size_multiple", settings.size_multiple, rule)


def apply_memory_switches(
    pipe: Any, device: torch.device, *, vae_slicing: bool, vae_tiling: bool | Literal["auto"], cpu_offload: bool
) -> None:
    """The one place the memory switches are applied; all off is the plain reference path."""
    if vae_slicing:
        pipe.vae.enable_slicing()
    if vae_tiling == "auto":
        tile_when_out_of_memory(pipe.vae)
    elif vae_tiling:
        pipe.vae.enable_tiling()
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=device)  # weights stay on the CPU until each model runs
    else:
        pipe.to(device)


def tile_when_out_of_memory(vae: Any) -> None:
    """`vae.decode` untiled, and again in tiles only if untiled ran out of memory (`vae_tiling: auto`)."""
    import torch

    untiled = vae.decode

    def decode(z: Any, return_dict: bool = True) -> Any:
        try:
            return untiled(z, return_dict=return_dict)
        except torch.OutOfMemoryError:
            pass  # retried below, once this frame no longer holds the failed decode's tensors
        release_memory(z.device)
        logger.warning("the VAE ran out of memory decoding %s latents untiled; decoding them in tiles", tuple(z.shape))
        vae.enable_tiling()
        try:
            return untiled(z, return_dict=return_dict)
        finally:
            vae.disable_tiling()

    vae.decode = decode


def release_memory(device: torch.device) -> None:
    """Hand the accelerator's cached blocks back (after a released pipeline or a video that ran out of memory)."""
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def _notifier(progress: ProgressCallback | None) -> Callable[[Progress], None]:
    """Deliver progress events from the worker thread on the calling event loop's thread, in order."""
    if progress is None:
        return lambda _event: None
    loop = asyncio.get_running_loop()

    def notify(event: Progress) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            loop.call_soon_threadsafe(progress, event)

    return notify


def _dtype_keyword() -> str:
    """`dtype` where diffusers has it (it deprecates `torch_dtype`), else `torch_dtype` (older ones reject `dtype`)."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _check_requires(family: Family) -> None:
    """BackendNotConfigured naming the extra if a module the family's pipeline needs is not installed."""
    import importlib.util

    for module in family.requires:
        if importlib.util.find_spec(module) is None:
            raise BackendNotConfigured(f"the {family.name} family's {family.pipeline_class} needs {module}: {_INSTALL}")


def _libraries() -> tuple[Any, Any]:
    """torch and diffusers; BackendNotConfigured naming the extra if either (or transformers) is missing."""
    try:
        import diffusers
        import torch
        import transformers  # noqa: F401  (the text encoders and tokenizers)
    except ImportError as exc:
        missing = exc.name or "a library"
        raise BackendNotConfigured(
            f"the diffusers video backend needs torch, diffusers and transformers ({missing} is missing): {_INSTALL}"
        ) from exc
    return torch, diffusers
