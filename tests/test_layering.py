"""The package's layers, checked by reading the imports of every module with ``ast``.

Bottom to top: the core (the modules directly in ttq_lib/), models, formats, data, training, reproduction,
course, cli.
A module may import from its own layer and the layers below; course is imported by nothing outside it;
the core imports torch and the standard library only; there is no import cycle; no module is long.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ttq_lib"
LAYERS = ("core", "models", "formats", "data", "training", "reproduction", "course", "cli")
MAX_LINES = 400


def layer_of(module: str) -> str:
    """``ttq_lib.formats.checkpoint`` -> "formats"; modules directly in the package are the core."""
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"  # ttq_lib/__init__: re-exports everything, lazily
    if parts[1] == "cli":
        return "cli"
    return parts[1] if parts[1] in LAYERS else "core"


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def package_imports(path: Path, root: Path) -> tuple[list[str], list[str]]:
    """(modules of the package this file imports, top-level names of other packages it imports).

    Imports inside functions count too.  ``from . import x`` counts as importing the submodule ``x`` when
    there is one; the module names of a ``lazy_exports`` table count as imports of their package.
    """
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    ours, others = [], []
    top = root.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.split(".")[0] == top else others).append(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module.split(".")[0] != top:
                    others.append(node.module)
                    continue
                target = node.module
            else:
                target = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                ours.append(sub if _exists(sub, root) else target)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            table = node.args[1]
            for key in getattr(table, "keys", []):
                if isinstance(key, ast.Constant) and key.value.startswith("."):
                    level = len(key.value) - len(key.value.lstrip("."))
                    ours.append(_resolve(module, is_package, level, key.value.lstrip(".")))
    return ours, [o.split(".")[0] for o in others]


def _exists(module: str, root: Path) -> bool:
    rel = Path(*module.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def check_layering(root: Path) -> list[str]:
    """Every violation of the rules in this file's docstring, one line each, naming the offending pair."""
    problems = []
    graph: dict[str, set[str]] = {}
    stdlib = set(sys.stdlib_module_names)
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        layer = layer_of(module)
        if layer not in LAYERS and layer != "facade":
            problems.append(f"{module}: unknown layer {layer!r}")
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            problems.append(f"{module}: {lines} lines, more than {MAX_LINES}: split it by idea")
        ours, others = package_imports(path, root)
        graph[module] = {o for o in ours if o != module}
        if layer == "facade":
            continue
        for imported in sorted(set(ours)):
            other = layer_of(imported)
            if other == "facade":
                problems.append(f"{module} imports {imported}: import from the defining module, not the facade")
            elif other == "course" and layer != "course":
                problems.append(f"{module} imports {imported}: nothing outside course may use course support")
            elif LAYERS.index(other) > LAYERS.index(layer):
                problems.append(f"{module} ({layer}) imports {imported} ({other}): a lower layer may not use a "
                                "higher one")
        if layer == "core":
            for name in sorted(set(others) - stdlib - {"torch"}):
                problems.append(f"{module} (core) imports {name}: the core uses torch and the standard library only")
    problems += [f"import cycle: {' -> '.join(c)}" for c in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group found by depth-first search (enough to name the problem)."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_package_follows_its_layers():
    problems = check_layering(PACKAGE)
    assert not problems, "\n".join(problems)


def test_every_layer_exists_and_is_documented():
    for layer in LAYERS[1:-1]:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and len(doc.splitlines()) <= 4, layer
    assert (PACKAGE / "cli" / "__init__.py").is_file() and (PACKAGE / "cli" / "__main__.py").is_file()


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_checker_names_upward_imports_cycles_and_foreign_core_imports(tmp_path):
    root = tmp_path / "pkg"
    _write(root, "__init__.py")
    for layer in LAYERS[1:-1]:
        _write(root, f"{layer}/__init__.py", '"""A layer."""\n')
    _write(root, "quantizers.py", "import numpy\nfrom .data import batches\n")
    _write(root, "data/batches.py", "from ..course import plots\nfrom . import cache\n")
    _write(root, "data/cache.py", "def f():\n    from .batches import g\n")
    _write(root, "course/plots.py", "from ..models import resnet\n")
    _write(root, "models/resnet.py", "import torch\n" + "x = 1\n" * (MAX_LINES + 1))
    _write(root, "cli.py", "from . import quantizers\n")
    problems = "\n".join(check_layering(root))
    assert "pkg.quantizers (core) imports pkg.data.batches (data)" in problems
    assert "pkg.quantizers (core) imports numpy" in problems
    assert "pkg.data.batches imports pkg.course.plots: nothing outside course" in problems
    assert "import cycle: pkg.data.batches -> pkg.data.cache -> pkg.data.batches" in problems
    assert f"pkg.models.resnet: {MAX_LINES + 2} lines" in problems
    assert "pkg.course.plots imports" not in problems and "pkg.cli" not in problems


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in sys.modules if m.startswith('ttq_lib')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_importing_the_core_loads_the_core_alone():
    loaded = _loaded_after("import ttq_lib.quantizers, ttq_lib.convert, ttq_lib.packed_layers")
    assert {layer_of(m) for m in loaded} <= {"facade", "core"}, sorted(loaded)


def test_plots_do_not_pull_in_the_training_loop():
    loaded = _loaded_after("import ttq_lib.course.plots")
    assert "ttq_lib.course.plots" in loaded
    assert not {"ttq_lib.training.loop", "ttq_lib.data.sources", "ttq_lib.formats.checkpoint"} & loaded


@pytest.mark.parametrize("name", ["ternarize", "ternarize_model", "layer_stats", "threshold_max", "TernaryConv2d",
                                  "resnet56", "load_model", "save_checkpoint", "recalibrate_bn", "pack_checkpoint"])
def test_public_api_stays_importable_from_the_package(name):
    import ttq_lib

    assert name in ttq_lib.__all__ and name in dir(ttq_lib)
    assert getattr(ttq_lib, name).__name__ == name
