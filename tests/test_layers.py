"""The package layers point one way (docs/ARCHITECTURE.md): core <- sim <- analysis, and
core <- realmodel; no import cycles between modules; cli.py imports its commands plainly.

Every import counts, including those inside functions (the lazy imports that keep torch out
of `cli.py sweep`): a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "sim", "analysis", "realmodel")
# what each package may import from this repository (itself included); realmodel uses no
# simulator code, so it sits directly on core
ALLOWED = {
    "core": {"core"},
    "sim": {"core", "sim"},
    "analysis": {"core", "sim", "analysis"},
    "realmodel": {"core", "realmodel"},
}
COMMAND_MODULES = ("sim.commands", "sim.population_commands", "analysis.commands",
                   "realmodel.commands")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Every repository module `module` imports (anywhere in its body): `from a.b import c`
    names a.b.c when that is a module, else a.b; relative imports are resolved."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join(here + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                     for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES or name in known:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = _imported(tree, name, path.name == "__init__.py", known) - {name}
    return graph


def test_packages_exist():
    for pkg in PACKAGES:
        assert (REPO / pkg / "__init__.py").is_file(), f"{pkg}/__init__.py missing"


def test_layer_rule():
    """core imports nothing of ours; sim only core; analysis core and sim; realmodel core."""
    broken = []
    for module, targets in sorted(_graph().items()):
        layer = module.split(".")[0]
        for target in sorted(targets):
            if target.split(".")[0] not in ALLOWED[layer]:
                broken.append(f"{module} imports {target}")
    assert not broken, "imports against the layer rule:\n  " + "\n  ".join(broken)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (iterative three-colour DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif nxt in graph and state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt in graph and not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_cli_imports_each_commands_module_plainly(module):
    tree = ast.parse((REPO / "cli.py").read_text(encoding="utf-8"))
    top = {f"{n.module}.{a.name}" for n in tree.body if isinstance(n, ast.ImportFrom)
           for a in n.names}
    top |= {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    top |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    assert module in top, f"cli.py does not import {module} at the top"


def test_cli_has_no_importlib():
    text = (REPO / "cli.py").read_text(encoding="utf-8")
    tree = ast.parse(text)
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(n.split(".")[0] == "importlib" for n in names), "cli.py uses importlib"
    assert "__import__" not in text


def test_cli_imports_without_the_real_extra():
    """`import cli` and `cli.py sweep --help` with torch, transformers and TRL missing (an
    import of them fails, as after `pip install -e .`): they load inside the real-model
    commands only."""
    import subprocess
    import sys

    code = (
        "import importlib.abc, sys\n"
        "BLOCKED = {'torch', 'transformers', 'trl', 'peft', 'accelerate', 'vllm'}\n"
        "class Missing(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Missing())\n"
        "import cli\n"
        "cli.main(['sweep', '--help'], standalone_mode=False)\n"
        "cli.main(['realmodel', '--help'], standalone_mode=False)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--lengths" in res.stdout and "sft" in res.stdout


def test_no_module_is_over_450_lines() -> None:
    """One job per module (docs/ARCHITECTURE.md): none of ours passes 450 lines."""
    root = Path(__file__).resolve().parents[1]
    sizes = {str(p.relative_to(root)): len(p.read_text(encoding="utf-8").splitlines())
             for pkg in ("core", "sim", "analysis", "realmodel")
             for p in (root / pkg).rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 450} == {}
