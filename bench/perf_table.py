"""The GPU figures in docs/performance.md, generated from the results files of bench/gpu-run.sh.

    python bench/perf_table.py            # rewrite the block between the markers in docs/performance.md
    python bench/perf_table.py --check    # exit 1 if the block is not what the results files give

Each `bench/results/<date>-<card>.json` (written by `bench/generate.py
--json`, as measured: never edited by hand) becomes one section: the card,
driver and software, the ceilings, one row per mode, and the modes that did
not run with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import HEADER, Row, table_row

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- gpu-results:begin (bench/perf_table.py writes this block) -->", "<!-- gpu-results:end -->"
MACHINE_KEYS = ("gpu", "gpu_memory", "driver", "cuda", "cudnn", "torch", "diffusers", "transformers", "torchao", "python")


def render(files: list[Path]) -> str:
    """The block: one section per results file, newest first; a line saying there are none yet otherwise."""
    if not files:
        return (
            "No results yet: no GPU has been lent since this run was prepared. `bench/gpu-run.sh` writes\n"
            "`<date>-<card>.json`; copy it to `bench/results/` and run `python bench/perf_table.py`.\n"
        )
    return "\n".join(section(json.loads(path.read_text(encoding="utf-8")), path.name) for path in sorted(files, reverse=True))


def section(data: dict[str, Any], name: str) -> str:
    machine, setup = data["machine"], data["setup"]
    lines = [
        f"### {machine.get('gpu', 'CPU')}, {machine['date']} (`bench/results/{name}`)",
        "",
        ", ".join(f"{key} {machine[key]}" for key in MACHINE_KEYS if key in machine) + ".",
        f"{setup['model']} with random weights, {setup['width']}x{setup['height']}, {setup['frames']} frames, guidance "
        f"{setup['guidance']:g}, {setup['dtype']}, parallel {setup['parallel']}; {setup['timed_steps']} timed steps "
        "per mode after a 2-step warm-up.",
        "",
    ]
    if data["ceilings"]:
        lines += ["| ceiling | shape | ms | TFLOP/s |", "|---|---|---|---|"]
        for c in data["ceilings"]:
            cells = [f"{c['ms']:.3f}", f"{c['tflops']:.3g}"] if "ms" in c else [f"not run: {c['skipped']}", "-"]
            lines.append(f"| {c['name']} | {c['shape']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += [table_row(Row(**row), data["ceilings"]) for row in data["rows"]]
    lines += [f"\nNot run: `{mode}`: {why}." for mode, why in data["skipped"].items()]
    return "\n".join(lines) + "\n"


def with_block(text: str, block: str) -> str:
    """`text` with the block between the markers replaced."""
    head, _, rest = text.partition(BEGIN)
    _, found, tail = rest.partition(END)
    if not found:
        raise SystemExit(f"{DOC}: the markers {BEGIN!r} ... {END!r} are missing")
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/performance.md is out of date")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    wanted = with_block(text, render(list(RESULTS.glob("*.json"))))
    if args.check:
        if wanted != text:
            print(f"{DOC} is out of date with {RESULTS}: run python bench/perf_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
