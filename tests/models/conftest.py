"""The models tier: real diffusers / transformers / vLLM code paths on tiny random-weight
checkpoints built offline in fixtures. Every test here is marked `models`; modules skip
themselves (pytest.importorskip) where the libraries are not installed."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.models)
