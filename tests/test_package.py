"""The package's shape: layers that import one way, no import cycle (type-only imports
included), no side effects on import, short modules, and dvc.yaml deps that name every
package a stage imports, so that editing one reruns the stage (DVC itself is asked in
test_dvc_pipeline)."""

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

SRC = REPO / "src"
PKG = SRC / "lenet_mnist"
MODULES = sorted(
    ".".join(p.relative_to(SRC).with_suffix("").parts)
    for p in PKG.rglob("*.py")
    if p.name not in ("__init__.py", "__main__.py")
)
STAGES = ("check", "download", "prepare", "train", "evaluate", "publish")
# Each package and the package-level parts it may import (besides errors, outputs and process,
# which every layer may): the layers of docs/architecture.md, bottom to top.
BASE = {"lenet_mnist.errors", "lenet_mnist.outputs", "lenet_mnist.process"}
ALLOWED = {
    "lenet_mnist.errors": set(),
    "lenet_mnist.outputs": set(),
    "lenet_mnist.process": set(),
    "lenet_mnist.config": set(),
    "lenet_mnist.data": {"config"},
    "lenet_mnist.model": set(),
    "lenet_mnist.numerics": {"config"},
    "lenet_mnist.tracking": {"config", "numerics"},
    "lenet_mnist.training": {"config", "data", "model", "numerics", "tracking"},
    "lenet_mnist.evaluation": {"config", "data", "model"},
    "lenet_mnist.serving": {"config", "data", "model", "tracking", "evaluation"},
    "lenet_mnist.study": {"config", "tracking"},
    "lenet_mnist.sweeps": {
        "config",
        "data",
        "model",
        "numerics",
        "tracking",
        "training",
        "evaluation",
        "serving",
        "study",
    },  # fmt: skip
}
NO_TORCH = ("lenet_mnist.config", "lenet_mnist.data", "lenet_mnist.study")


def source(module: str) -> Path:
    return SRC / Path(*module.split(".")).with_suffix(".py")


def imports(module: str, typing_too: bool = True) -> set[str]:
    """The package's modules that `module` imports, wherever in the file, TYPE_CHECKING
    imports included unless `typing_too` is False."""
    tree = ast.parse(source(module).read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if not typing_too and id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lenet_mnist"):
            for alias in node.names:  # `from pkg import module` or `from module import name`
                named = f"{node.module}.{alias.name}"
                found.add(named if named in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lenet_mnist.")}
    return {m for m in found if m in MODULES}


def third_party(module: str) -> set[str]:
    tree = ast.parse(source(module).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    return {n.split(".")[0] for n in names if n and not n.startswith(("lenet_mnist", "__future"))}


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        if (m := todo.pop()) not in seen:
            seen.add(m)
            todo.extend(imports(m))
    return seen


def layer(module: str) -> str:
    """`lenet_mnist.training.fit` -> `lenet_mnist.training`; top-level modules are their own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_imports_are_found_inside_functions_and_type_checking_blocks():
    assert "lenet_mnist.sweeps.job" in imports("lenet_mnist.run")  # imported in a function
    assert "lenet_mnist.config.schema" in imports("lenet_mnist.numerics")  # TYPE_CHECKING
    assert "lenet_mnist.config.schema" not in imports("lenet_mnist.numerics", typing_too=False)


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_itself_back(module):
    for other in imports(module):
        assert module not in closure(other), f"{module} -> {other} -> ... -> {module}"


@pytest.mark.parametrize("module", [m for m in MODULES if layer(m) in ALLOWED])
def test_layers_import_downwards_only(module):
    allowed = {f"lenet_mnist.{p}" for p in ALLOWED[layer(module)]} | BASE | {layer(module)}
    wrong = {m for m in imports(module) if layer(m) not in allowed}
    assert not wrong, f"{module} imports {sorted(wrong)} above or beside its layer"


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith(NO_TORCH)])
def test_config_data_and_study_import_no_torch(module):
    heavy = {"torch", "pytorch_lightning", "lightning"}
    found = {lib for m in closure(module) for lib in third_party(m)} & heavy
    assert not found, f"{module} needs {sorted(found)}"


def declared(stage: str) -> set[str]:
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    return {d for d in deps if d.startswith("src/")}


def covered(path: str, deps: set[str]) -> bool:
    return any(path == d or path.startswith(d + "/") for d in deps)


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_declares_every_package_its_stage_imports(stage):
    deps = declared(stage)
    needed = {
        source(m).relative_to(REPO).as_posix() for m in closure(f"lenet_mnist.stages.{stage}")
    }
    missing = sorted(p for p in needed if not covered(p, deps))
    assert not missing, f"dvc.yaml's {stage} stage lacks deps covering {missing}"
    # and no dep beyond what it imports: a folder or file of which it imports nothing
    unused = sorted(d for d in deps if not any(covered(p, {d}) for p in needed))
    assert not unused, f"dvc.yaml's {stage} stage depends on {unused}, which it never imports"


@pytest.mark.parametrize("stage", ["check", "download", "prepare"])
def test_the_stages_before_training_load_no_torch_lightning_or_mlflow(stage):
    code = (
        f"import sys, lenet_mnist.stages.{stage}\n"
        "heavy = {'torch', 'pytorch_lightning', 'lightning', 'mlflow'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def test_importing_the_package_changes_nothing_process_wide():
    """gc, warning filters and threads are the entry points' business, if anyone's."""
    libraries = sorted({name for m in MODULES for name in third_party(m)})
    code = (
        f"for lib in {libraries!r}: __import__(lib)\n"  # their own import-time effects
        "import gc, warnings, torch\n"
        "before = (gc.get_threshold(), list(warnings.filters), torch.get_num_threads())\n"
        f"for m in {MODULES!r}: __import__(m)\n"
        "after = (gc.get_threshold(), list(warnings.filters), torch.get_num_threads())\n"
        "print(before == after, gc.isenabled())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["True", "True"], done.stderr[-2000:]


def test_every_pinned_package_is_installed_at_its_pin():
    """.ci/constraints.txt pins the whole environment, pyproject.toml's own pins among them:
    a dependency added to one and not the other, or an install that strayed, fails here."""
    pins = dict(
        line.split("==")
        for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    pins = {canonicalize_name(name): version for name, version in pins.items()}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in (*project["dependencies"], *project["optional-dependencies"]["dev"]):
        name, version = requirement.split("==")
        assert pins.get(canonicalize_name(name)) == version, requirement
    installed = {
        canonicalize_name(d.metadata["Name"]): Version(d.version).public
        for d in importlib.metadata.distributions()
    }
    assert {name: installed.get(name) for name in pins} == pins
