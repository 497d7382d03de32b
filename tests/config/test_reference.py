"""docs/configuration.md is the generator's output for the schema as it is now."""

import subprocess
import sys

import pytest

from lenet_mnist.config import reference, schema
from lenet_mnist.errors import PipelineError
from tests.conftest import REPO

PAGE = REPO / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def generated() -> str:
    return reference.render()


def test_the_committed_page_is_what_the_schema_generates(generated):
    regenerate = "python -m lenet_mnist.config.reference"
    assert PAGE.read_text() == generated, f"docs/configuration.md is stale: run {regenerate}"


def test_every_schema_key_has_a_row(generated):
    every = schema.keys()  # a function of the schema, not a dict's keys
    missing = [key for key in every if f"| `{key}` |" not in generated]
    assert not missing


def test_a_key_the_tables_lack_stops_the_generator(monkeypatch):
    monkeypatch.delitem(reference.WHAT, "train.epochs")
    with pytest.raises(PipelineError, match="^train.epochs: "):
        reference.render()


def test_check_exits_1_with_one_line_when_the_page_is_stale(tmp_path):
    stale = tmp_path / "configuration.md"
    stale.write_text("# Configuration reference\n")
    cmd = [sys.executable, "-m", "lenet_mnist.config.reference", "--check", "--out", str(stale)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "is stale" in done.stderr
    assert subprocess.run([*cmd[:-1], str(PAGE)], cwd=REPO).returncode == 0


def test_the_generator_loads_no_torch_lightning_or_mlflow():
    code = (
        "import sys; from lenet_mnist.config import reference; reference.render()\n"
        "heavy = {'torch', 'pytorch_lightning', 'lightning', 'mlflow'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
