"""The layers that ../shared/design/architecture.md draws ("Inside f2f/"), checked in the imports.

The method core is every top-level module of `f2f/` but the three that face a
user: `cli` and `cli_group` (the `f2f` command) and `client` (the HTTP client).
That is `__init__`, `align`, `canvas`, `caption`, `catalogue`, `config`,
`errors`, `families`, `imageio`, `masks`, `pipeline`, `protocols`, `quiet`,
`ranking`, `request`, `result`, `selection` and `video`. The packages
`backends`, `serving`, `bulk` and `eval` are built on it.

- The core imports no module of those packages, nor the user-facing ones,
  anywhere in a module (at its top or inside a function).
- No import cycle among the modules of `f2f/`, counting the imports that run
  when a module is imported (its top level, `if`/`try` blocks there included,
  `if TYPE_CHECKING:` blocks not). An import inside a function runs when the
  function is called, after every module it names can be fully imported, so it
  cannot see a half-initialised module; outside the core such imports are
  deliberate: they keep `import f2f` light (torch, vLLM, Ray) and load a
  backend or a command only on the path that uses it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import f2f

ROOT = Path(f2f.__file__).parent
OUTSIDE_CORE = {"f2f.cli", "f2f.cli_group", "f2f.client"}
PACKAGES = ("f2f.backends", "f2f.serving", "f2f.bulk", "f2f.eval")


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in sorted(ROOT.rglob("*.py"))}
CORE = sorted(name for name in MODULES if name.count(".") <= 1 and not name.startswith(PACKAGES) and name not in OUTSIDE_CORE)


def _targets(node: ast.Import | ast.ImportFrom) -> set[str]:
    """The f2f modules an import statement imports (`from f2f.x import y`: f2f.x.y if it is a module, else f2f.x)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        assert node.level == 0, "f2f uses absolute imports"
        submodules = {f"{node.module}.{alias.name}" for alias in node.names}
        names = {name if name in MODULES else node.module or "" for name in submodules}
    return {name for name in names if name in MODULES}


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _top_level_imports(body: list[ast.stmt]) -> set[str]:
    """What runs when the module is imported: its top-level imports, those in `if`/`try` blocks too."""
    found: set[str] = set()
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= _targets(node)
        elif isinstance(node, (ast.If, ast.Try)) and not _is_type_checking(node):
            blocks = [node.body, node.orelse, *([h.body for h in node.handlers] if isinstance(node, ast.Try) else [])]
            for block in blocks:
                found |= _top_level_imports(block)
    return found


def _all_imports(tree: ast.Module) -> set[str]:
    return set().union(*(_targets(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))))


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (the modules in order, the first again at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_core_is_the_expected_set_of_modules() -> None:
    assert "f2f.config" in CORE and "f2f.pipeline" in CORE and "f2f.families" in CORE
    assert not [name for name in CORE if name.startswith(PACKAGES) or name in OUTSIDE_CORE]


def test_the_core_imports_no_backend_serving_bulk_eval_or_cli_module() -> None:
    trees = _trees()
    outside = {name: sorted(t for t in _all_imports(trees[name]) if t not in CORE) for name in CORE}
    assert {name: found for name, found in outside.items() if found} == {}


def test_no_import_cycle_in_f2f() -> None:
    trees = _trees()
    graph = {name: _top_level_imports(tree.body) - {name} for name, tree in trees.items()}
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_imports_with_the_other_packages_unimportable() -> None:
    blocked = ", ".join(f"{name!r}: None" for name in (*PACKAGES, *OUTSIDE_CORE))
    code = f"import sys; sys.modules.update({{{blocked}}}); import importlib; [importlib.import_module(m) for m in {CORE!r}]"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent, timeout=120)
    assert done.returncode == 0, done.stderr
