"""Masked edits, generation side, without torch: the `mask` config block, the mask's checks and its way through
the serving adapters (`RemoteGenerator` -> `GeneratorDeployment.generate_stream` -> the backend). Its way through
the bulk stages is tested in test_bulk_stages.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes import SyntheticGenerator
from PIL import Image

from f2f.backends.video.latent_masks import check_mask
from f2f.config import F2FConfig, MaskConfig, VideoConfig, load_config
from f2f.errors import InvalidConfig, InvalidInput
from f2f.protocols import Progress
from f2f.serving.deployments.generator import GeneratorDeployment
from f2f.serving.deployments.remote import RemoteGenerator

SETTINGS = VideoConfig(width=32, height=16, num_frames=5, num_inference_steps=2, guidance_scale=1.0, fps=8)
IMAGE = Image.new("RGB", (32, 16), (10, 20, 30))
MASK = Image.new("L", (32, 16), 0)


def test_the_mask_block_defaults_and_rules() -> None:
    mask = F2FConfig().mask
    assert (mask.mode, mask.strength, mask.dilate_px, mask.feather_px) == ("latent", 1.0, 8, 8)
    for bad in ({"strength": 0}, {"strength": 1.5}, {"dilate_px": -1}, {"feather_px": -1}, {"mode": "blend"}, {"extra": 1}):
        with pytest.raises(InvalidConfig) as info:
            load_config(overrides={"mask": bad})
        assert info.value.field == f"mask.{next(iter(bad))}"
    assert load_config(overrides={"mask": {"mode": "composite", "strength": 0.5}}).mask == MaskConfig(
        mode="composite", strength=0.5
    )


@pytest.mark.parametrize(
    ("mask", "words"),
    [
        (Image.new("RGB", (32, 16)), 'must be an "L" image of the canvas size (32x16)'),
        (Image.new("L", (16, 16)), "canvas size (32x16)"),
        ("mask.png", 'must be an "L" image'),
    ],
)
def test_a_mask_of_the_wrong_mode_or_size_is_refused_naming_it(mask: Any, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_mask(mask, IMAGE, "wan", supported=True, split=False)
    assert info.value.field == "mask" and words in str(info.value)


def test_a_family_or_a_split_that_cannot_keep_latents_refuses_naming_composite() -> None:
    with pytest.raises(InvalidInput) as info:
        check_mask(MASK, IMAGE, "ltx", supported=False, split=False)
    assert info.value.field == "mask" and "ltx cannot keep latents outside a mask; use mask.mode: composite" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        check_mask(MASK, IMAGE, "wan", supported=True, split=True)
    assert info.value.field == "mask" and "generator.parallel" in str(info.value) and "mask.mode: composite" in str(info.value)
    check_mask(MASK, IMAGE, "wan", supported=True, split=False)


class _Stream:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __aiter__(self) -> AsyncIterator[Any]:
        async def items() -> AsyncIterator[Any]:
            for item in self.items:
                yield item

        return items()

    def cancel(self) -> None:
        pass


class _Handle:
    """A deployment handle's shape: options(stream=True).generate_stream.remote(...) -> an async stream, calls recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.generate_stream = self

    def options(self, stream: bool) -> _Handle:
        return self

    def remote(self, *args: Any, **kwargs: Any) -> _Stream:
        self.calls.append((args, kwargs))
        return _Stream([Progress("generate", 1, 1), [[IMAGE]]])


def test_remote_generator_sends_the_mask_and_keeps_the_old_call_without_one() -> None:
    handle = _Handle()
    remote = RemoteGenerator(handle)
    assert asyncio.run(remote.generate(IMAGE, "c", [1], SETTINGS)) == [[IMAGE]]
    assert asyncio.run(remote.generate(IMAGE, "c", [1], SETTINGS, mask=MASK)) == [[IMAGE]]
    assert handle.calls == [((IMAGE, "c", [1], SETTINGS), {}), ((IMAGE, "c", [1], SETTINGS), {"mask": MASK})]


class _Ranks:
    """A split replica's other ranks, which must not be started for a refused mask."""

    def start(self, *args: Any) -> list[Any]:
        raise AssertionError("the other ranks started")

    def close(self) -> None:
        pass


def _deployment(backend: Any, split: bool = False) -> GeneratorDeployment:
    deployment = GeneratorDeployment.__new__(GeneratorDeployment)  # no replica: the body with a fake backend
    deployment.backend, deployment.ranks, deployment.lost_rank = backend, (_Ranks() if split else None), None
    return deployment


async def _drain(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


def test_the_deployment_passes_the_mask_to_the_backend() -> None:
    backend = SyntheticGenerator()
    deployment = _deployment(backend)  # one body: it closes its backend when it goes
    items = asyncio.run(_drain(deployment.generate_stream(IMAGE, "c", [1], SETTINGS, mask=MASK)))
    assert isinstance(items[-1], list) and len(items[-1]) == 1
    asyncio.run(_drain(deployment.generate_stream(IMAGE, "c", [1], SETTINGS)))  # the old call shape
    assert backend.masks == [MASK, None]


def test_a_split_deployment_refuses_a_mask_before_its_other_ranks_start() -> None:
    with pytest.raises(InvalidInput) as info:
        asyncio.run(_drain(_deployment(SyntheticGenerator(), split=True).generate_stream(IMAGE, "c", [1], SETTINGS, mask=MASK)))
    assert info.value.field == "mask" and "generator.parallel" in str(info.value)
