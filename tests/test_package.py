"""The package's shape: no import cycles, no side effects on import, and dvc.yaml deps
that name every module a stage imports, so that editing one reruns the stage (DVC itself
is asked in test_dvc_pipeline)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

PKG = REPO / "src" / "lenet_mnist"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
STAGES = ("check", "download", "prepare", "train", "evaluate")


def imports(module: str) -> set[str]:
    """The package's modules that `module` imports at run time, wherever in the file."""
    tree = ast.parse((PKG / f"{module}.py").read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "lenet_mnist":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lenet_mnist."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names = (a.name for a in node.names if a.name.startswith("lenet_mnist."))
            found |= {name.split(".")[1] for name in names}
    return found


def third_party(module: str) -> set[str]:
    tree = ast.parse((PKG / f"{module}.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    return {n for n in names if n and not n.startswith(("lenet_mnist", "__future__"))}


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        if (m := todo.pop()) not in seen:
            seen.add(m)
            todo.extend(imports(m))
    return seen


def test_imports_are_found_even_inside_functions():
    assert {"config", "stage", "sources"} <= imports("download")
    assert "report" not in imports("report_plots")  # a TYPE_CHECKING import does not count


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_itself_back(module):
    for other in imports(module):
        assert module not in closure(other), f"{module} -> {other} -> ... -> {module}"


@pytest.mark.parametrize("module", MODULES)
def test_modules_stay_short_enough_to_read(module):
    assert len((PKG / f"{module}.py").read_text().splitlines()) <= 300


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_declares_every_module_its_stage_imports(stage):
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    modules = {Path(d).stem for d in declared if d.startswith("src/lenet_mnist/")}
    assert modules == closure(stage)


def test_importing_the_package_changes_nothing_process_wide():
    """gc, warning filters and threads are the entry points' business, if anyone's."""
    libraries = sorted({name for m in MODULES for name in third_party(m)})
    code = (
        f"for lib in {libraries!r}: __import__(lib)\n"  # their own import-time effects
        "import gc, warnings, torch\n"
        "before = (gc.get_threshold(), list(warnings.filters), torch.get_num_threads())\n"
        f"for m in {MODULES!r}: __import__('lenet_mnist.' + m)\n"
        "after = (gc.get_threshold(), list(warnings.filters), torch.get_num_threads())\n"
        "print(before == after, gc.isenabled())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["True", "True"], done.stderr[-2000:]
