import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from lenet_mnist.data import idx, prepare
from lenet_mnist.errors import PipelineError
from tests.conftest import run_module, write_params


def test_pad_and_scale_keeps_the_digit_centred_with_zero_border():
    images = np.full((2, 28, 28), 255, dtype=np.uint8)
    images[1] = 51
    x = prepare.pad_and_scale(images)
    assert x.shape == (2, 1, 32, 32) and x.dtype == np.float32
    assert np.all(
        x[:, :, 2:30, 2:30] == np.array([1.0, 0.2], dtype=np.float32)[:, None, None, None]
    )
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(x[:, 0][:, border] == 0)


def test_standardize_gives_zero_mean_unit_std():
    x = np.random.default_rng(0).random((100, 1, 32, 32), dtype=np.float32)
    z = prepare.standardize(x, float(x.mean()), float(x.std()))
    assert z.dtype == np.float32
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4


def test_split_is_disjoint_complete_and_seeded():
    train, val = prepare.split_indices(1000, 100, seed=3)
    assert len(val) == 100 and len(train) == 900
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(1000))
    again, other = prepare.split_indices(1000, 100, 3), prepare.split_indices(1000, 100, 4)
    assert np.array_equal(again[1], val) and not np.array_equal(other[1], val)


def _cfg(**kw):
    base = dict(val_size=100, split_seed=0, train_limit=1000, test_limit=200)
    return OmegaConf.create({**base, **kw})


def test_prepare_on_real_data(mnist_raw, tmp_path):
    stats = prepare.prepare(mnist_raw, tmp_path / "out", _cfg())
    assert stats["sizes"] == {"train": 900, "val": 100, "test": 200}
    x, y = prepare.read_split(tmp_path / "out", "train")
    assert x.shape == (900, 1, 32, 32) and y.dtype == np.int64
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats
    # Same inputs, same bytes.
    again = prepare.prepare(mnist_raw, tmp_path / "again", _cfg())
    assert again["digest"] == stats["digest"]


def test_val_size_larger_than_the_slice_is_refused(mnist_raw, tmp_path):
    with pytest.raises(PipelineError, match="data.val_size=1000"):
        prepare.prepare(mnist_raw, tmp_path / "out", _cfg(val_size=1000))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("labels", "message"),
    [(np.full(5, 10, np.uint8), "labels must be 0-9"), (np.zeros(4, np.uint8), "labels for 5")],
)
def test_inconsistent_raw_files_are_refused(tmp_path, labels, message):
    images = np.zeros((5, 28, 28), np.uint8)
    for name, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        (tmp_path / name).write_bytes(idx.encode(array))
    with pytest.raises(PipelineError, match=message):
        prepare.read_raw_split(tmp_path, "train")


def test_wrong_image_shape_is_refused(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx.encode(np.zeros((2, 27, 28), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx.encode(np.zeros(2, np.uint8)))
    with pytest.raises(PipelineError, match=r"expected \(N, 28, 28\)"):
        prepare.read_raw_split(tmp_path, "test")


def test_a_raw_folder_missing_one_file_is_one_line_naming_it(copy_raw, tmp_path):
    raw = copy_raw(tmp_path / "raw")
    (raw / "t10k-labels-idx1-ubyte").unlink()
    p = write_params(tmp_path / "params.yaml")
    done = run_module("stages.prepare", raw, tmp_path / "prepared", "--params", p, cwd=tmp_path)
    assert done.returncode == 1  # the environment's, as every OSError (docs/pipeline.md)
    assert done.stderr.startswith(f"error: {raw}/t10k-labels-idx1-ubyte: No such file or directory")
    assert done.stderr.count("\n") == 1
    assert sorted(x.name for x in tmp_path.iterdir()) == ["params.yaml", "raw"]


@pytest.fixture
def prepared_copy(prepared_slice, tmp_path):
    """A writable copy of the prepared slice, to plant bad values in."""
    import shutil

    copy = tmp_path / "prepared"
    shutil.copytree(prepared_slice[0], copy)
    return copy


def _plant(path, index, value):
    array = np.load(path, mmap_mode="r+")
    array[index] = value
    array.flush()


def test_the_prepared_arrays_load_as_prepare_wrote_them(prepared_slice):
    for split in ("train", "val", "test"):
        x, y = prepare.read_split(prepared_slice[0], split)
        assert x.shape[1:] == (1, 32, 32) and len(x) == len(y) > 0


@pytest.mark.parametrize(
    ("name", "index", "value", "found"),
    [
        ("val_x.npy", (3, 0, 16, 16), np.nan, "values that are not finite (NaN or infinity)"),
        ("test_x.npy", (0, 0, 0, 0), np.inf, "values that are not finite (NaN or infinity)"),
        ("train_x.npy", (7, 0, 5, 5), 40.0, "values from "),
        ("train_y.npy", 2, 10, "values from 0 to 10, outside the 0 to 9 of prepared labels"),
    ],
)
def test_a_planted_bad_value_is_refused_in_one_line_naming_the_file(
    prepared_copy, name, index, value, found
):
    _plant(prepared_copy / name, index, value)
    split = name.split("_")[0]
    with pytest.raises(PipelineError) as err:
        prepare.read_split(prepared_copy, split)
    message = str(err.value)
    assert message.startswith(f"{prepared_copy / name} holds {found}")
    assert message.endswith("; run `dvc repro prepare` to write it again")


def test_training_on_a_planted_nan_blames_the_data_not_the_learning_rate(prepared_copy, tmp_path):
    from tests.conftest import stage_folder

    _plant(prepared_copy / "train_x.npy", (11, 0, 16, 16), np.nan)
    folder = stage_folder(tmp_path / "stage", prepared_copy, trainer__compile=False)
    done = folder.run("train")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: ") and "train_x.npy holds values that are not finite" in line
    assert "optimizer.lr" not in line
    assert not (folder.data / "model").exists()
