"""The layout's rules, checked on the import graph of the source tree (every import statement,
function-level ones included):

- nothing in ``service/`` imports ``training/``;
- the torch-free layers (``model/runtime``, ``model/mesh``, the shared ``model`` modules and all of
  ``service/``) import with torch made unimportable;
- the graph has no cycles;
- the serving images copy no training code.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "training", "service")
TORCH_FREE = ("model.conventions", "model.onnx_contract", "model.topology", "model.runtime", "model.mesh", "service")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``path`` imports (``from a.b import c`` counts as a.b.c when c is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in PACKAGES and name != module_name(path):
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_the_walk_sees_the_imports(graph: dict[str, set[str]]) -> None:
    # The checks below mean something only if the walk finds real edges, lazy ones included.
    assert "model.runtime.reconstructor" in graph["model.runtime.pipeline"]
    assert "training.evaluate" in graph["training.cli"]  # imported inside a function
    assert "service.cli" in graph["training.cli"]


def test_service_never_imports_training(graph: dict[str, set[str]]) -> None:
    offending = {name: sorted(i for i in imported if i.startswith("training"))
                 for name, imported in graph.items() if name.startswith("service")}
    assert {name: found for name, found in offending.items() if found} == {}


def test_model_never_imports_service_or_training(graph: dict[str, set[str]]) -> None:
    offending = {name: sorted(i for i in imported if not i.startswith("model"))
                 for name, imported in graph.items() if name.startswith("model")}
    assert {name: found for name, found in offending.items() if found} == {}


def test_torch_free_layers_never_reach_torch_code(graph: dict[str, set[str]]) -> None:
    torch_free = [name for name in graph if name.startswith(TORCH_FREE)]
    offending = {name: sorted(i for i in graph[name] if i.startswith(("model.nn", "training")))
                 for name in torch_free}
    assert {name: found for name, found in offending.items() if found} == {}


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else [name, target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_torch_free_modules_import_without_torch() -> None:
    """Import every torch-free module in a fresh interpreter where torch and the training code cannot be imported."""
    modules = [name for name in source_modules() if name.startswith(TORCH_FREE)]
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'training', 'torchvision'):\n"
        "            raise ImportError(f'{name} is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'training')]\n"
        "print(len(sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(modules) > 20


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_serving_images_copy_no_training_code(dockerfile: str) -> None:
    copies = [line.split()[1:] for line in (REPO / "docker" / dockerfile).read_text().splitlines()
              if line.startswith("COPY") and "--from=" not in line]
    assert copies, "the Dockerfile copies nothing: the check would be empty"
    sources = [source for line in copies for source in line[:-1]]
    assert "service" in sources and "model" in sources
    assert not [s for s in sources if s.strip("./").split("/")[0] in ("training", "tests", ".")]


def readme_layout() -> list[str]:
    """The paths named in the first column of the README's layout table."""
    text = (REPO / "README.md").read_text()
    table = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return [path for row in rows for path in re.findall(r"`([^`]+)`", row.split(" | ")[0])]


def test_readme_layout_table_matches_the_tree() -> None:
    """Every path in the table exists, and every module is named in it, itself or by its own folder."""
    named = readme_layout()
    assert [p for p in named if not (REPO / p.rstrip("/")).exists()] == []
    folders = {p.rstrip("/") for p in named if p.endswith("/")}
    modules = [p.relative_to(REPO) for p in source_modules().values() if p.name != "__init__.py"]
    unnamed = [str(m) for m in modules if str(m) not in named and str(m.parent) not in folders]
    assert unnamed == []
