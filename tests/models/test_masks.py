"""Masked edits in the generator (`f2f.backends.video.latent_masks`) on tiny random-weight checkpoints of every family.

Each family (CogVideoX, CogVideoX 1.5, Wan2.1, Wan2.2 A14B, Wan2.2 TI2V, LTX-Video, ChronoEdit) runs
through the real seam with a mask over the right half of the canvas, 3 steps
(two intermediate noise levels and the last, clean one) and guidance on.
Random weights make noise, not video, so the checks are about latents and
about how the frames relate to each other, never about what they show:

- the latents outside the mask (beyond the dilation, on the latent grid) are
  the static source's VAE latents, computed here from the pipeline's own VAE,
  noised with the seed's noise to the level of each step, and clean at the end;
- the frames outside the mask are much closer to the decode of those
  reference latents than the unmasked clip is; inside, the clip differs from
  the unmasked one;
- no mask is exactly the plain pipeline call; batches, one-seed-per-call,
  refusals and the mask's own checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("diffusers")
pytest.importorskip("ftfy")  # the Wan pipeline cleans prompts with it

import torch

from f2f.backends.video import i2v
from f2f.backends.video.i2v import DiffusersVideoGenerator
from f2f.backends.video.latent_masks import edit_weights, keep_weights, static_video
from f2f.config import MaskConfig, VideoConfig
from f2f.errors import GeneratorOutOfMemory

pytestmark = pytest.mark.models

CAPTION = "The dog slowly sits down."
STEPS = 3
DILATE_PX = 8
LATENT_TOLERANCE = 1e-5  # float32: the same ops on the same tensors in two places; values are O(1..10)
BATCH_TOLERANCE = 1  # uint8 levels: a seed's frames in a batch vs alone (float rounding of batched kernels)
# Outside the mask, the masked clip's distance to the reference decode is at most this share of the unmasked clip's.
# The kept latents there ARE the reference (the latent test), but a random-weight VAE decoder mixes the whole frame
# (GroupNorm statistics over all of it; Wan's mid-block attention), so the free half still moves the kept half's
# pixels. Measured per frame on the tiny checkpoints: 0.25-0.29 (CogVideoX), 0.29-0.36 (1.5), 0.64-0.72 (Wan2.1),
# 0.37-0.43 (TI2V), 0.51-0.55 (LTX-Video). Float rounding between CPUs moves a frame's mean by far less than 0.01
# grey levels (a few pixels by one level), the ratio by under 0.002, so 0.8 holds on any CPU; latents outside left to
# the model give ~1.
OUTSIDE_RATIO = 0.8
# Inside the mask, over frames 1..: the masked clip differs from the unmasked one by more than this mean (grey levels;
# measured 1.1 on the tiny TI2V, whose small transformer barely reacts, 4.8-7.2 elsewhere; float rounding between CPUs
# moves a clip by far less than 0.01 on average) ...
INSIDE_MIN_MAD = 0.25
INSIDE_FREE = 0.5  # ... and stays at least this share as far from the reference decode as the unmasked clip (~1.0)
# name: (tiny builder arguments, canvas, frames, VAE spatial scale, max_batch_seeds)
FAMILIES: dict[str, tuple[tuple[str, dict[str, Any]], tuple[int, int], int, int, int]] = {
    "cogvideox": (("make_tiny_cogvideox", {"height": 64, "width": 96}), (96, 64), 9, 8, 2),
    "cogvideox1.5": (("make_tiny_cogvideox", {"variant": "cogvideox1.5"}), (96, 64), 9, 8, 2),
    "wan2.1": (("make_tiny_wan", {"variant": "wan2.1"}), (96, 64), 5, 8, 2),
    "wan2.2": (("make_tiny_wan", {"variant": "wan2.2"}), (96, 64), 5, 8, 1),  # two experts
    "wan2.2-ti2v": (("make_tiny_wan", {"variant": "wan2.2-ti2v"}), (96, 64), 5, 16, 2),
    "ltx": (("make_tiny_ltx", {}), (256, 64), 9, 32, 1),
    "chronoedit": (("make_tiny_chronoedit", {}), (96, 64), 5, 8, 2),  # Wan2.1's layout, 5 frames (no reasoning)
}


@dataclasses.dataclass
class Case:
    name: str
    gen: DiffusersVideoGenerator
    settings: VideoConfig
    scale: int

    @property
    def size(self) -> tuple[int, int]:
        return self.settings.width, self.settings.height


def _build(name: str, folder: Path) -> Path:
    import importlib

    function, arguments = FAMILIES[name][0]
    module = "f2f.backends.tiny.tiny_" + function.removeprefix("make_tiny_")
    return getattr(importlib.import_module(module), function)(folder, seed=0, **arguments)


@pytest.fixture(scope="module", params=list(FAMILIES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Case]:
    name = request.param
    _, (width, height), frames, scale, batch = FAMILIES[name]
    folder = _build(name, tmp_path_factory.mktemp(name) / f"tiny-{name}")
    gen = DiffusersVideoGenerator(folder, device="cpu", max_batch_seeds=batch, mask=MaskConfig(dilate_px=DILATE_PX))
    video = VideoConfig(
        width=width, height=height, num_frames=frames, num_inference_steps=STEPS, guidance_scale=3.0, fps=16
    )  # fmt: skip
    yield Case(name, gen, video, scale)
    gen.close()


def canvas(size: tuple[int, int]) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((30, 200, 30), (0, height // 2, width, height))
    image.paste((240, 240, 240), (width // 4, 0, width // 2, height // 2))
    return image


def right_half(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, size[0], size[1]))
    return mask


def kept_columns(c: Case) -> int:
    """Latent columns wholly left of the dilated mask: their keep weight is 1."""
    return (c.size[0] // 2 - DILATE_PX) // c.scale


def pixels(clip: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(frame, dtype=np.float32) for frame in clip])  # [F, H, W, 3]


def run(c: Case, seeds: list[int], mask: Image.Image | None = None) -> list[np.ndarray]:
    return [pixels(clip) for clip in asyncio.run(c.gen.generate(canvas(c.size), CAPTION, seeds, c.settings, mask=mask))]


def capture(monkeypatch: pytest.MonkeyPatch, given: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Every step's latents as the pipeline goes on with them (what `callback_on_step_end` returned); `given`: as the
    step left them (what it was given)."""
    seen: list[torch.Tensor] = []
    original = i2v._Job.step_callback

    def recording(job: Any, index: int, blend: Any = None) -> Callable[..., dict[str, Any]]:
        inner = original(job, index, blend)

        def on_step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if given is not None:
                given.append(tensors["latents"].detach().clone())
            out = inner(pipe, i, t, tensors)
            seen.append(out["latents"].detach().clone())
            return out

        return on_step_end

    monkeypatch.setattr(i2v._Job, "step_callback", recording)
    return seen


def expected_reference(c: Case) -> torch.Tensor:
    """The static source's latents in the family's own space, from its VAE and normalisation, in [1, C, F', h, w]."""
    pipe = c.gen._pipe
    video = static_video(pipe, canvas(c.size), c.settings)
    with torch.no_grad():
        latents = pipe.vae.encode(video).latent_dist.mode()
    if c.name.startswith("cogvideox"):
        return latents * pipe.vae_scaling_factor_image  # decode_latents divides by it
    config = pipe.vae.config
    if c.name.startswith("wan") or c.name == "chronoedit":  # ChronoEdit: Wan's VAE and normalisation
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1)
        return (latents - mean) * (1.0 / torch.tensor(config.latents_std).view(1, -1, 1, 1, 1))
    mean, std = pipe.vae.latents_mean.view(1, -1, 1, 1, 1), pipe.vae.latents_std.view(1, -1, 1, 1, 1)
    return (latents - mean) * config.scaling_factor / std  # the inverse of the decode's denormalisation


def outside(c: Case, shape: torch.Size) -> torch.Tensor:
    """True on the latent cells kept at the source (left of the dilated mask), in [1, 1, F', h, w]; LTX: not frame 0."""
    frames, height, width = shape[2:]
    kept = torch.zeros(1, 1, frames, height, width, dtype=torch.bool)
    kept[..., : kept_columns(c)] = True
    if c.name == "ltx":
        kept[:, :, 0] = False  # the pipeline holds frame 0 at the image latent itself
    return kept


def noised(c: Case, reference: torch.Tensor, noise: torch.Tensor, i: int) -> torch.Tensor:
    """The reference at the noise level after step i, by the scheduler's own rule (clean after the last step)."""
    scheduler = c.gen._pipe.scheduler
    if i == STEPS - 1:
        return reference
    if c.name.startswith("cogvideox"):
        return scheduler.add_noise(reference, noise, scheduler.timesteps[i + 1 : i + 2])
    sigma = float(scheduler.sigmas[i + 1])
    return (1.0 - sigma) * reference + sigma * noise


def in_layout(c: Case, clean: torch.Tensor, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference and the kept cells in the pipeline's layout, and the seeds' noise ([len(seeds), ...])."""
    layout, pipe = c.gen.family.mask_latents.layout, c.gen._pipe
    reference = layout(pipe, clean)
    kept = layout(pipe, outside(c, clean.shape)).expand(reference.shape)
    noise = torch.stack([torch.randn(tuple(reference.shape[1:]), generator=torch.Generator().manual_seed(s)) for s in seeds])
    return reference, kept, noise


def test_the_latents_outside_the_mask_are_the_source_noised_to_every_step(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = [3, 4] if FAMILIES[case.name][4] > 1 else [3]
    seen = capture(monkeypatch)
    asyncio.run(case.gen.generate(canvas(case.size), CAPTION, seeds, case.settings, mask=right_half(case.size)))
    assert len(seen) == STEPS
    layout = case.gen.family.mask_latents.layout
    pipe = case.gen._pipe
    clean = expected_reference(case)
    reference, kept, noise = in_layout(case, clean, seeds)
    assert kept.any() and not kept.all()
    for i, latents in enumerate(seen):
        target = noised(case, reference, noise, i)
        for seed in range(len(seeds)):
            got, want = latents[seed][kept[0]], target.expand_as(latents)[seed][kept[0]]
            assert torch.allclose(got, want, atol=LATENT_TOLERANCE, rtol=0), (case.name, i, (got - want).abs().max())
    final = seen[-1]
    assert torch.allclose(final[:, kept[0]], reference[:, kept[0]].expand(len(seeds), -1), atol=LATENT_TOLERANCE, rtol=0)
    free = ~outside(case, clean.shape)  # a cell the dilated mask touches at all is free (max pooling of 0/255)
    if case.name == "ltx":
        free[:, :, 0] = False
    free = layout(pipe, free).expand(reference.shape)[0]
    assert (final[0][free] - reference[0][free]).abs().mean() > 0.05  # inside the mask the model generates (measured >1)


def test_a_strength_below_1_pulls_the_latents_outside_part_way(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(case.gen, "mask", MaskConfig(strength=0.25, dilate_px=DILATE_PX))
    given: list[torch.Tensor] = []
    seen = capture(monkeypatch, given)
    asyncio.run(case.gen.generate(canvas(case.size), CAPTION, [3], case.settings, mask=right_half(case.size)))
    reference, kept, noise = in_layout(case, expected_reference(case), [3])
    for i, (before, after) in enumerate(zip(given, seen, strict=True)):
        want = 0.25 * noised(case, reference, noise, i) + 0.75 * before
        assert torch.allclose(after[kept], want[kept], atol=LATENT_TOLERANCE, rtol=0), (case.name, i)
        assert torch.equal(after[~kept], before[~kept])  # inside the dilated mask: the model's own latents


def test_the_frames_keep_the_source_outside_and_change_inside(case: Case) -> None:
    mask = right_half(case.size)
    plain = run(case, [5])[0]
    masked = run(case, [5], mask)[0]
    reference = run(case, [5], Image.new("L", case.size, 0))[0]  # everything kept: the decode of the reference latents
    edge = (kept_columns(case) - 1) * case.scale  # one latent cell short of the kept region: the decoder's convolutions
    inner = case.size[0] // 2 + DILATE_PX
    for frame in range(1, case.settings.num_frames):  # frame 0 is the source in every family's conditioning
        kept = np.abs(masked[frame, :, :edge] - reference[frame, :, :edge]).mean()
        free = np.abs(plain[frame, :, :edge] - reference[frame, :, :edge]).mean()
        assert kept <= OUTSIDE_RATIO * free, (case.name, frame, kept, free)
    inside = (slice(1, None), slice(None), slice(inner, None))  # frames 1.., every row, the columns inside the mask
    assert np.abs(masked[inside] - plain[inside]).mean() > INSIDE_MIN_MAD  # masking changes what is generated inside
    # ... and leaves it free: as far from the reference as the unmasked clip is (not pulled to the source)
    assert np.abs(masked[inside] - reference[inside]).mean() > INSIDE_FREE * np.abs(plain[inside] - reference[inside]).mean()


def test_no_mask_is_exactly_the_plain_pipeline_call(case: Case) -> None:
    gen, video = case.gen, case.settings
    before = run(case, [7])[0]
    run(case, [7], right_half(case.size))  # a masked video leaves nothing behind for the next one
    after = run(case, [7])[0]
    plain = gen._pipe(
        image=canvas(case.size) if not gen.family.image_per_prompt else [canvas(case.size)], prompt=[CAPTION],
        height=video.height, width=video.width, num_frames=video.num_frames, num_inference_steps=STEPS,
        guidance_scale=video.guidance_scale, output_type="pil",
        generator=torch.Generator().manual_seed(7) if gen.family.one_seed_per_call else [torch.Generator().manual_seed(7)],
        **gen.family.call_arguments(gen.spec, video),
    ).frames[0]  # fmt: skip
    assert np.array_equal(before, pixels(plain)) and np.array_equal(after, before)  # the same call: bit for bit


def test_a_masked_seed_is_the_same_in_a_batch_as_alone(case: Case) -> None:
    """Two seeds: one batch (CogVideoX, Wan) or one call each (LTX-Video: one seed per call)."""
    mask = right_half(case.size)
    together = run(case, [3, 4], mask)
    for seed, in_batch in zip((3, 4), together, strict=True):
        assert np.abs(run(case, [seed], mask)[0] - in_batch).max() <= BATCH_TOLERANCE
    assert np.abs(together[0] - together[1]).mean() > 1.0  # the seeds differ (inside the mask at least)


def test_the_mask_onto_the_latent_grid_dilates_then_keeps_the_freest_pixel() -> None:
    mask = Image.new("L", (32, 16), 0)
    mask.putpixel((20, 8), 128)  # one soft pixel
    edit = edit_weights(mask, dilate_px=2)
    assert edit.shape == (16, 32) and float(edit.max()) == pytest.approx(128 / 255)
    rows, cols = torch.nonzero(edit, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 10, 18, 22)  # a 5x5 square around it
    keep = keep_weights(edit, (1, 4, 3, 2, 4), strength=0.5)  # cells of 8x8 pixels
    assert keep.shape == (1, 1, 3, 2, 4)
    expected = torch.full((2, 4), 0.5)
    expected[0:2, 2] = 0.5 * (1 - 128 / 255)  # pixels 18..22 x 6..10 lie in column 2, rows 0 and 1
    assert torch.allclose(keep[0, 0, 1], expected) and torch.equal(keep[0, 0, 0], keep[0, 0, 2])
    assert torch.equal(edit_weights(mask, dilate_px=0), torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0))


def test_a_reference_that_does_not_fit_is_a_typed_error_and_the_instance_stays_usable(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case.name != "cogvideox":
        pytest.skip("the same code for every family: one is enough")
    gen = case.gen

    def out_of_memory(pipe: Any, video: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    hooks = dataclasses.replace(gen.family.mask_latents, encode=out_of_memory)
    monkeypatch.setattr(gen, "family", dataclasses.replace(gen.family, mask_latents=hooks))
    with pytest.raises(GeneratorOutOfMemory) as info:
        run(case, [1], right_half(case.size))
    assert "encoding the masked source as 9 frames at 96x64" in str(info.value)
    monkeypatch.undo()
    assert len(run(case, [1], right_half(case.size))[0]) == case.settings.num_frames
