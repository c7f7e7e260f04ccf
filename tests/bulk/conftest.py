"""The bulk tier: `f2f bulk` / `python -m f2f.bulk` / `ray job submit` against a real local Ray head on 127.0.0.1,
tiny checkpoints. Every test here is marked `bulk`; modules skip themselves where Ray is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.bulk)
