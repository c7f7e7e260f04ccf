"""The deploy tier: the container image, the Kubernetes manifests and the monitoring files, validated offline
(no cluster, no Docker). Every test here is marked `deploy`."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.deploy)
