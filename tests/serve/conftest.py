"""The serve tier: the real Ray Serve application on CPU, real HTTP on 127.0.0.1, tiny checkpoints.
Every test here is marked `serve`; modules skip themselves (pytest.importorskip) where Ray is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.serve)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A keys file with two API keys, alice's and bob's: {"path", "alice", "bob"} (the tokens)."""
    from f2f.serving.api.auth import add_key

    path = tmp_path_factory.mktemp("auth") / "keys.yaml"
    return {"path": str(path), "alice": add_key(path, "alice"), "bob": add_key(path, "bob")}


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's job store folder (records, sources, outputs, the file-system broker)."""
    return tmp_path_factory.mktemp("jobs")
