"""bench/gpu_imports.py finds a carried wheel's requirement that nothing installed meets (what --no-deps can miss)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import gpu_imports


def carried(site: Path, name: str, *requires: str) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0", *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_every_unmet_requirement_is_named_and_extras_and_other_platforms_are_not(tmp_path: Path) -> None:
    carried(tmp_path, "carried", "numpy>=1", "no-such-package-f2f>=2", "numpy<1", 'pytest; extra == "test"')
    carried(tmp_path, "other", 'no-such-package-f2f; sys_platform == "win32"')
    unmet = gpu_imports.unmet_requirements(str(tmp_path))
    assert unmet[0] == "carried: no-such-package-f2f>=2 (not installed)"
    assert unmet[1].startswith("carried: numpy<1 (found ") and len(unmet) == 2
