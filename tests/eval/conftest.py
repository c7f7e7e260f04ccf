"""The eval tier: `f2f eval`'s metrics on their real weights (LPIPS, BlazePose), which tools/setup-venv.sh
installs (`f2f eval install-weights`), and CLIP on tiny random weights. Every test here is marked `eval`."""

from __future__ import annotations

from pathlib import Path

import pytest

from f2f.config import load_config
from f2f.eval.weights import default_folder

REPO = Path(__file__).resolve().parents[2]
POSEDIT = REPO.parent / "shared" / "data" / "posedit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.eval)


@pytest.fixture(scope="session")
def weights() -> Path:
    """The installed metric weights: missing ones fail here (the setup script installs them), they are not skipped."""
    return default_folder(load_config().cache_dir)


@pytest.fixture(scope="session")
def posedit() -> Path:
    if not (POSEDIT / "annotations.json").is_file():
        pytest.skip(f"the shared PosEdit data is not at {POSEDIT} (this checkout has no ../shared)")
    return POSEDIT
