"""Make a CUDA build of torchvision importable beside CPU torch (test environments only).

torchvision's `_meta_registrations.py` registers fake kernels for its `nms`
and `qnms` operators unconditionally; without its compiled ops (a CUDA build
next to CPU torch) that raises "operator torchvision::nms does not exist" at
import. This guards those two registrations with `_has_ops()`, as the file
already does for every other operator. Idempotent; does nothing when the ops
load or when the file is already patched.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

MARK = "# f2f: guarded"


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision is not installed; nothing to patch")
        return 0
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    if MARK in text:
        print(f"{path}: already patched")
        return 0
    pattern = re.compile(r'^@torch\.library\.register_fake\("torchvision::(q?nms)"\)$', re.MULTILINE)
    guarded = (
        r'@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda fn: fn))  ' + MARK
    )
    patched, count = pattern.subn(guarded, text)
    if count != 2:
        print(f"{path}: expected 2 registrations to guard, found {count}; not patched", file=sys.stderr)
        return 1
    path.write_text(patched)
    print(f"{path}: guarded the nms/qnms fake registrations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
