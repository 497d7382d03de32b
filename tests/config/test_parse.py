"""params.yaml is bounded: a file that is too large, or that expands too far, is refused in
one line within a second, before any of it is built; one within bounds loads as before."""

import time
from pathlib import Path

import pytest

from lenet_mnist.config import parse
from lenet_mnist.errors import PipelineError
from tests.conftest import REPO

PARAMS = (REPO / "params.yaml").read_text()


def _laughs(levels: int, width: int, indent: str) -> str:
    """`levels` anchors, each a list of `width` aliases of the one before: width**levels."""
    lines = [f"{indent}- &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"{indent}- &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _refused_quickly(path: Path, message: str) -> None:
    """Refused by parse.load, the stages' one reader, in one line and well under a second."""
    start = time.process_time()
    with pytest.raises(PipelineError, match=message) as err:
        parse.load(path)
    assert time.process_time() - start < 1.0
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "key",
    [
        "junk:\n",  # an unknown key, which the schema would refuse only after expanding it
        "  mirrors:\n",  # a list of the schema's own, nested lists among its items
    ],
)
def test_a_billion_laughs_is_refused_before_it_expands(tmp_path, key):
    bomb = key + _laughs(9, 10, "  ")
    text = PARAMS.replace(key, bomb, 1) if key in PARAMS else PARAMS + bomb
    (path := tmp_path / "params.yaml").write_text(text)
    _refused_quickly(path, rf"^{path} uses more than {parse.MAX_ALIASES} YAML aliases")


def test_few_aliases_that_expand_too_far_are_refused(tmp_path):
    """Within the alias limit, 2 aliases per level over 10 levels still double 10 times."""
    bomb = _laughs(10, 2, "  ").replace("[lol, lol]", "[" + ", ".join(["lol"] * 100) + "]")
    (path := tmp_path / "params.yaml").write_text(PARAMS + "junk:\n" + bomb)
    _refused_quickly(path, rf"^{path} expands to more than {parse.MAX_VALUES:,} values")


def test_a_huge_list_of_mirrors_is_refused_without_being_read(tmp_path):
    mirrors = "  - https://example.org/mnist/\n" * 1_800_000  # 56 MB
    text = PARAMS.replace("  mirrors:\n", "  mirrors:\n" + mirrors, 1)
    (path := tmp_path / "params.yaml").write_text(text)
    _refused_quickly(path, rf"^{path} is {len(text):,} bytes; a params file may hold at most")


def test_the_size_limit_is_exact(tmp_path):
    path = tmp_path / "params.yaml"
    padded = PARAMS + "#" * (parse.MAX_BYTES - len(PARAMS) - 1) + "\n"
    path.write_text(padded)
    assert parse.load(path).train.batch_size == 64
    path.write_text(padded + "\n")
    _refused_quickly(path, "bytes; a params file may hold at most 256 KiB$")


@pytest.mark.parametrize(
    ("junk", "message"),
    [
        ("junk: " + "[" * 40 + "]" * 40 + "\n", "nests values deeper than 32 levels"),
        ("junk: &a [1, *a]\n", r"alias \*a comes before its anchor's value ends"),
        ("junk: *nowhere\n", r"alias \*nowhere comes before its anchor's value ends"),
    ],
)
def test_deep_or_self_referring_values_are_one_line(tmp_path, junk, message):
    (path := tmp_path / "params.yaml").write_text(PARAMS + junk)
    _refused_quickly(path, message)


def test_a_params_file_with_a_few_aliases_loads_as_written_out(tmp_path):
    text = PARAMS.replace("  - 0.985\n", "  - 0.985\n  - &goal 0.995\n")
    text = text.replace("  target: 0.99\n", "  target: *goal\n")
    (path := tmp_path / "params.yaml").write_text(text)
    cfg = parse.load(path)
    assert cfg.train.targets == [0.97, 0.98, 0.985, 0.995] and cfg.objective.target == 0.995
