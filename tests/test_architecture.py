"""The layout's rules (docs/architecture.md): which folder may import which, no import cycles,
one module opens ONNX Runtime sessions, and reading a study loads no training stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).parent.parent
# What each folder may import of edgetune at module level: the arrows of docs/architecture.md.
ALLOWED = {
    "edgetune": {"edgetune"},
    "spaces": {"edgetune", "spaces"},
    "objectives": {"edgetune", "spaces", "objectives"},
    "search": {"edgetune", "spaces", "objectives", "search"},
    "reports": {"edgetune", "spaces", "objectives", "search", "reports"},
}
# Entry points that import each command's modules when it runs, so that --help stays light.
LAZY_LOADERS = {"search.cli", "edgetune"}
COMMAND = "edgetune.__main__"  # ``python -m edgetune``: the CLI, from the top


def package_modules() -> dict[str, Path]:
    """``edgetune.<...>`` module name -> file, from pyproject.toml's package folders."""
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    modules = {}
    for package, folder in folders.items():
        for path in (ROOT / folder).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def imports(path: Path) -> tuple[set[str], set[str]]:
    """Modules imported at module level (outside ``if TYPE_CHECKING:``), and inside functions."""
    tree = ast.parse(path.read_text())
    top, nested = set(), set()

    def visit(node: ast.AST, inside_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            function = inside_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                (nested if function else top).update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                (nested if function else top).add(child.module)
            visit(child, function)

    visit(tree, False)
    return top, nested


def folder_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "edgetune"


def short(module: str) -> str:
    return module.removeprefix("edgetune.") or "edgetune"


def edgetune_imports(names: set[str], modules: dict[str, Path]) -> set[str]:
    return {name for name in names if name in modules}


def test_each_folder_imports_only_the_folders_below_it() -> None:
    modules = package_modules()
    wrong = []
    for module, path in modules.items():
        if module == COMMAND:
            continue
        for imported in edgetune_imports(imports(path)[0], modules):
            if folder_of(imported) not in ALLOWED[folder_of(module)]:
                wrong.append(f"{short(module)} -> {short(imported)}")
    assert wrong == []


def test_no_import_cycles() -> None:
    modules = package_modules()
    graph = {m: edgetune_imports(imports(p)[0], modules) - {m} for m, p in modules.items()}
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(" -> ".join(map(short, path[path.index(module):] + [module])))
        if module in done:
            return
        for imported in graph[module]:
            walk(imported, [*path, module])
        done.add(module)

    for module in graph:
        walk(module, [])


def test_no_module_imports_edgetune_inside_a_function_but_the_command_entry_points() -> None:
    modules = package_modules()
    lazy = {short(m) for m, p in modules.items() if edgetune_imports(imports(p)[1], modules)}
    assert lazy <= LAZY_LOADERS


def test_one_module_opens_onnx_runtime_sessions() -> None:
    """ONNX Runtime's tools (quantization, transformer fusions) are build steps; sessions, which
    time and score models, belong to the runtime seam."""
    modules = package_modules()
    users = {short(m) for m, p in modules.items() if "onnxruntime" in set().union(*imports(p))}
    assert users == {"objectives.runtimes.onnxruntime"}


def test_reading_a_study_loads_no_training_stack() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, edgetune.search.cli, edgetune.search.tables, "
         "edgetune.search.front; print(sorted({'torch', 'transformers', 'nncf'} & "
         "set(sys.modules)))"], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_measurement_agent_loads_no_training_stack() -> None:
    """``edgetune agent`` runs on devices that have the runtime but no torch."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, edgetune.search.cli, edgetune.search.agent; "
         "print(sorted({'torch', 'transformers', 'nncf', 'peft'} & set(sys.modules)))"],
        capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
