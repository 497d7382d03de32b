"""docs/configuration.md is the generator's output for the schema as it is now."""

import subprocess
import sys

import pytest
from pydantic.fields import FieldInfo

from lenet_mnist.config import parse, reference, schema
from tests.conftest import REPO

PAGE = REPO / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def generated() -> str:
    return reference.render()


def test_the_committed_page_is_what_the_schema_generates(generated):
    regenerate = "python -m lenet_mnist.config.reference"
    assert PAGE.read_text() == generated, f"docs/configuration.md is stale: run {regenerate}"


def test_the_introduction_states_the_params_files_bounds():
    limits = (
        f"at most {parse.MAX_BYTES // 1024} KiB, {parse.MAX_ALIASES} YAML aliases, "
        f"{parse.MAX_VALUES:,} values once they are expanded\nand {parse.MAX_DEPTH} levels"
    )
    assert limits in PAGE.read_text().partition("\n## ")[0]


def test_every_schema_key_has_a_row_with_what_it_allows_and_does(generated):
    for key, info in schema.keys().items():
        assert info.description, f"{key} has no description"
        assert f"| `{key}` |" in generated
        assert f"| {schema.allowed(info)} |" in generated and f"| {info.description} |" in generated


def test_a_description_changed_in_the_schema_changes_the_page(monkeypatch):
    info = FieldInfo.from_annotated_attribute(int, schema.key("passes", ge=1))
    monkeypatch.setattr(reference, "keys", lambda: {**schema.keys(), "train.epochs": info})
    assert "| `train.epochs` | `10` | an integer >= 1 | yes | passes |" in reference.render()


def test_the_generator_loads_no_torch_lightning_or_mlflow():
    code = (
        "import sys; from lenet_mnist.config import reference; reference.render()\n"
        "heavy = {'torch', 'pytorch_lightning', 'lightning', 'mlflow'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def test_help_lists_every_key_with_what_it_allows_and_does():
    done = subprocess.run(
        [sys.executable, "-m", "lenet_mnist.config", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    for key, info in schema.keys().items():
        assert f"  {key}: {schema.allowed(info)}; {info.description}\n" in done.stdout, key
