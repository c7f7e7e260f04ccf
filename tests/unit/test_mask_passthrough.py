"""Masked edits, generation side, without torch: the `mask` config block, the split rule and its way through
the serving adapters (`RemoteGenerator` -> `GeneratorDeployment.generate_stream` -> the backend). Its way through
the bulk stages is tested in test_bulk_stages.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes import SyntheticGenerator
from PIL import Image

from f2f.config import F2FConfig, MaskConfig, VideoConfig, load_config
from f2f.errors import InvalidConfig, InvalidInput
from f2f.protocols import Progress
from f2f.request import EditSettings, check_edit
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


def test_a_split_generator_refuses_a_latent_mask_naming_composite_before_the_job_is_queued() -> None:
    split, area = F2FConfig(generator={"parallel": {"cfg": 2}}), Image.new("L", (32, 16), 0)
    area.paste(255, (16, 0, 32, 16))
    with pytest.raises(InvalidInput) as info:
        check_edit(IMAGE, "c", split, mask=area)
    assert info.value.field == "mask" and "generator.parallel" in str(info.value) and "mask.mode: composite" in str(info.value)
    assert check_edit(IMAGE, "c", split, EditSettings(mask_mode="composite"), mask=area).mask is not None
    assert check_edit(IMAGE, "c", F2FConfig(), mask=area).mask is not None


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


def _deployment(backend: Any) -> GeneratorDeployment:
    deployment = GeneratorDeployment.__new__(GeneratorDeployment)  # no replica: the body with a fake backend
    deployment.backend, deployment.ranks, deployment.lost_rank = backend, None, None
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
