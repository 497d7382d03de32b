"""Hydra multirun through the pipeline's own stage code: MLflow parent and children, resume.

Sweeps run as a user runs them, `python -m lenet_mnist.run -m ...`, on the real data's
prepared slice, one epoch per job, each sweep with its own sqlite store.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lenet_mnist import numerics
from lenet_mnist.config import parse
from lenet_mnist.model.networks import WEIGHTS
from lenet_mnist.serving import logged
from lenet_mnist.study import report
from lenet_mnist.sweeps import sweep
from lenet_mnist.tracking import store, ui
from tests.conftest import (
    REPO,
    hydra_train,
    mlflow_runs,
    new_store,
    serve_mlflow,
    sweep_overrides,
)
from tests.trained import one_epoch

# Debian's (Playwright's own download fails here); CHROMIUM names another, as .ci/run's
# set-up does on a forge's Ubuntu runner
CHROMIUM = os.environ.get("CHROMIUM") or "/usr/bin/chromium"

pytestmark = pytest.mark.slow


def test_one_parent_run_with_one_child_per_grid_point(sweep_2x1):
    client, runs = mlflow_runs(sweep_2x1["db"])
    parents = [r for r in runs if store.SWEEP_TAG in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    overrides = "train.batch_size=50,100 train.epochs=1 trainer.compile=false"
    assert parent.data.tags[store.OVERRIDES_TAG] == overrides
    assert parent.info.status == "FINISHED"
    kids = [r for r in runs if r.data.tags.get(store.PARENT_TAG) == parent.info.run_id]
    assert len(kids) == len(runs) - 1 == 2
    assert sorted(k.data.params["train.batch_size"] for k in kids) == ["100", "50"]
    for kid in kids:
        assert kid.info.status == "FINISHED"
        assert kid.data.tags[store.COMPLETE_TAG] == "true"
        assert 0.5 < kid.data.metrics["test_acc"] <= 1  # evaluate ran into the child run
        assert kid.data.params["numerics.threads"] == "1"  # portable's own, as in dvc repro
    assert len({k.data.tags[store.CONFIG_TAG] for k in kids}) == 2
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.md", "report.html", "overview.png"} <= artifacts


GENAI_SCREENS = ("Detect Issues", "Token Usage", "No traces")  # MLflow 3's GenAI overview


@pytest.fixture(scope="module")
def ui_of_sweep(sweep_2x1):
    """One real `mlflow ui` on sweep_2x1's store and one Chromium, for the browser tests; each
    test opens its own browser context, so nothing a page stores carries over."""
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "browser tests need Chromium: apt-get install -y chromium"
    with serve_mlflow("ui", "--backend-store-uri", sweep_2x1["db"]) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield url, browser
        browser.close()


def test_mlflow_ui_folds_the_children_under_the_parent(sweep_2x1, ui_of_sweep, tmp_path):
    """The real `mlflow ui` in a real browser, opened at ui.experiment_url: the runs
    table, not the GenAI overview, with one parent row that expands to its children and
    the saved view's param, metric, data set and model columns."""
    client, runs = mlflow_runs(sweep_2x1["db"])
    (parent,) = [r for r in runs if store.SWEEP_TAG in r.data.tags]
    experiment = parent.info.experiment_id
    url, browser = ui_of_sweep
    with browser.new_context(viewport={"width": 2400, "height": 1000}) as context:
        page = context.new_page()
        link = ui.experiment_url(url, experiment)
        assert link.startswith(f"{url}/#/experiments/{experiment}/runs?")
        page.goto(link)
        row = page.get_by_role("row").filter(has_text=parent.info.run_name)
        row.wait_for(timeout=60_000)
        assert page.get_by_role("row").filter(has_text="sweep ").count() == 1
        assert page.get_by_text("bs50-ep1").count() == 0  # folded under the parent
        row.get_by_role("button").first.click()  # the row's expand toggle
        for child in ("bs50-ep1", "bs100-ep1"):
            page.get_by_text(child).first.wait_for(timeout=30_000)
        headers = page.get_by_role("columnheader").all_inner_texts()
        expected = {"Parameters", "Metrics", "train.batch_size", "test_acc", "Dataset", "Models"}
        assert expected <= set(headers), headers
        # The grid draws a row as pinned and scrolling halves that share one aria-rowindex.
        index = page.get_by_role("row").filter(has_text="bs100-ep1").get_attribute("aria-rowindex")
        cells = " ".join(page.locator(f'[role=row][aria-rowindex="{index}"]').all_inner_texts())
        assert "100" in cells.split(), cells  # its batch size, in its param column
        assert f"{logged.DATASET} (" in cells, cells  # the prepared data, name (digest)
        assert logged.SERVED_MODEL in cells.split(), cells  # a logged model of the run
        body = page.inner_text("body")
        assert not [text for text in GENAI_SCREENS if text in body], body[:2000]
        assert "/runs" in page.url and "/overview" not in page.url
        _screenshot(page, tmp_path, "mlflow-runs-table.png")


def test_the_model_training_switch_leads_from_the_home_page_to_the_runs(ui_of_sweep, tmp_path):
    """The path a user takes without a link: the UI's home page opens on its GenAI screens
    until "Model training" is picked in the sidebar (the browser keeps that choice); then
    the experiment's name leads to its runs table, and "Views" offers the saved columns."""
    url, browser = ui_of_sweep
    with browser.new_context(viewport={"width": 1920, "height": 1000}) as context:
        page = context.new_page()
        page.goto(f"{url}/")
        page.get_by_text("Model training", exact=True).click()
        page.get_by_role("link", name="lenet-mnist").first.click()
        page.get_by_role("row").filter(has_text="sweep ").wait_for(timeout=60_000)
        assert "/runs" in page.url and "workflowType=machine_learning" in page.url
        body = page.inner_text("body")
        assert not [text for text in GENAI_SCREENS if text in body], body[:2000]
        _screenshot(page, tmp_path, "mlflow-home-to-runs.png")
        assert page.get_by_role("columnheader", name="test_acc").count() == 0
        page.get_by_role("button", name="Views").click()  # the saved view, by its name
        page.get_by_text(ui.VIEW_NAME).first.click()
        page.get_by_role("columnheader", name="test_acc").first.wait_for(timeout=30_000)


def _screenshot(page, tmp_path: Path, name: str) -> None:
    """Into the test's own folder, and into $LENET_SCREENSHOTS too when that is set."""
    page.screenshot(path=str(tmp_path / name))
    if folder := os.environ.get("LENET_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


def test_each_job_writes_the_stage_outputs_in_its_own_folder(sweep_2x1):
    """Under the joblib launcher's worker processes too: a folder per grid point."""
    for size in ("50", "100"):
        folder = sweep_2x1["sweep_dir"] / f"train.batch_size={size},{ONE_EPOCH_EAGER}"
        for name in ("model/weights.safetensors", "train_history.csv", "test.json"):
            assert (folder / name).is_file(), folder / name
    assert (sweep_2x1["sweep_dir"] / "report" / "report.html").is_file()


def test_a_sweep_job_trains_the_weights_dvc_repro_trains_for_the_same_values(
    sweep_2x1, prepared_slice, tmp_path_factory
):
    """A grid point, run in a joblib worker, and the train stage of its values: one result."""
    staged = one_epoch(prepared_slice, tmp_path_factory)
    assert parse.load(staged["params"]).train.batch_size == 50
    job = sweep_2x1["sweep_dir"] / f"train.batch_size=50,{ONE_EPOCH_EAGER}"
    weights = (staged["data"] / "model" / WEIGHTS).read_bytes()
    assert (job / "model" / WEIGHTS).read_bytes() == weights


def test_resume_runs_exactly_the_jobs_an_interrupted_sweep_missed(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    db = new_store(tmp_path)
    grid = ("train.batch_size=100,150,250",)
    first = _in_default_folders(sweep_overrides(prepared, tmp_path, *grid), tmp_path / "sweeps")
    proc = hydra_train(*first, cwd=tmp_path, db=db, background=True)
    # Jobs run in turn: kill the sweep as soon as job 1 (batch 150) has opened its run.
    deadline = time.monotonic() + 300
    while not (cut := _running(db, "150")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "job 1 never started"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    client, runs = mlflow_runs(db)
    finished = [r for r in runs if r.data.tags.get(store.COMPLETE_TAG) == "true"]
    assert [r.data.params["train.batch_size"] for r in finished] == ["100"]

    # Resumed with the grid typed in another order, by the joblib launcher's processes.
    regrid = ("train.batch_size=250,150,100", "launcher=joblib")
    resumed = _in_default_folders(sweep_overrides(prepared, tmp_path, *regrid), tmp_path / "sweeps")
    again = hydra_train(*resumed, cwd=tmp_path, db=db)
    assert again.returncode == 0, again.stderr[-3000:]
    client, runs = mlflow_runs(db)
    parents = [r for r in runs if store.SWEEP_TAG in r.data.tags]
    assert len(parents) == 1  # the same parent, reopened
    complete = [r for r in runs if r.data.tags.get(store.COMPLETE_TAG) == "true"]
    sizes = sorted(int(r.data.params["train.batch_size"]) for r in complete)
    assert sizes == [100, 150, 250]  # each point once: 100 kept, 150 and 250 run now
    assert finished[0].info.run_id in {r.info.run_id for r in complete}
    assert client.get_run(cut).info.status == "KILLED"  # the cut-off job is marked
    assert not [r for r in runs if r.info.status == "RUNNING"]
    points = _assert_one_folder_holds_the_sweep(tmp_path / "sweeps", parents[0], [100, 150, 250])
    skips = [(p / "train.log").read_text().count("skipped: done before") for p in points]
    assert skips == [1, 0, 0]  # in the log of the job's first start, next to its outputs


ONE_EPOCH_EAGER = "train.epochs=1,trainer.compile=False"  # as Hydra hands them to a job


def _in_default_folders(overrides: list[str], sweeps: Path) -> list[str]:
    """The overrides with conf/'s own sweep folder, under `sweeps`, as a user runs them."""
    kept = [o for o in overrides if not o.startswith("hydra.sweep.dir=")]
    return [*kept, f"paths.sweeps={sweeps}"]


def _assert_one_folder_holds_the_sweep(sweeps: Path, parent, sizes: list[int]) -> list[Path]:
    """One folder, named by the sweep key: each point's outputs, skipped or not, and the report."""
    (folder,) = sweeps.iterdir()
    assert folder.name == parent.data.tags[store.SWEEP_TAG]
    points = [folder / f"train.batch_size={s},{ONE_EPOCH_EAGER}" for s in sizes]
    for point in points:
        assert (point / "test.json").is_file(), sorted(p.name for p in folder.iterdir())
    rows = (folder / "report" / report.SUMMARY_CSV).read_text().splitlines()
    assert len(rows) == 1 + len(sizes)
    return points


def _running(db: str, batch_size: str) -> str | None:
    """The id of a run still RUNNING with this batch size, once the store exists."""
    runs = [r for r in mlflow_runs(db)[1] if r.info.status == "RUNNING"]
    return next(
        (r.info.run_id for r in runs if r.data.params.get("train.batch_size") == batch_size),
        None,
    )


def test_force_reruns_finished_points(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    db = new_store(tmp_path)
    for extra in ((), ("force=true",)):
        grid = ("train.batch_size=250", *extra)
        overrides = sweep_overrides(prepared, tmp_path / f"s{len(extra)}", *grid)
        done = hydra_train(*overrides, cwd=tmp_path, db=db)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "skipped" not in done.stdout
    client, runs = mlflow_runs(db)
    (parent,) = [r for r in runs if store.SWEEP_TAG in r.data.tags]  # one sweep
    assert len([r for r in runs if r.data.tags.get(store.COMPLETE_TAG) == "true"]) == 2
    (run_id,) = report.collect(client, parent.info.run_id)["run_id"]  # once, its newest run
    assert (
        run_id
        == max(
            (r for r in runs if store.PARENT_TAG in r.data.tags), key=lambda r: r.info.start_time
        ).info.run_id
    )


def test_a_bad_grid_value_stops_with_one_line(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    db = new_store(tmp_path)
    grid = ("train.batch_size=0,50",)
    done = hydra_train(*sweep_overrides(prepared, tmp_path / "s", *grid), cwd=tmp_path, db=db)
    assert done.returncode == 2
    assert "error: train.batch_size=0 is not allowed; use an integer >= 1" in done.stderr
    assert "Traceback" not in done.stderr
    assert not [p for p in (tmp_path / "s").iterdir() if p.is_dir()]  # the refused job's folder
    _, runs = mlflow_runs(db)
    assert [r.info.status for r in runs if store.SWEEP_TAG in r.data.tags] == ["FAILED"]


def test_ddp_in_a_sweep_stops_with_one_line(prepared_slice, tmp_path):
    """Lightning would start each job's second process by running the whole sweep again."""
    prepared, _ = prepared_slice
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = ("train.batch_size=50", "trainer.devices=2", "trainer.strategy=ddp")
    done = hydra_train(*sweep_overrides(prepared, tmp_path / "s", *grid), cwd=tmp_path, db=db)
    assert done.returncode == 2
    assert (
        "error: trainer.devices=2 with trainer.num_nodes=1 is not allowed in a sweep (-m); "
        "use 1 process per job, or run it without -m"
    ) in done.stderr
    assert "Traceback" not in done.stderr


def test_a_sweep_without_prepared_data_says_what_to_run(tmp_path):
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = sweep_overrides(tmp_path / "nothing", tmp_path / "s", "train.batch_size=50")
    done = hydra_train(*overrides, cwd=tmp_path, db=db)
    assert done.returncode == 2
    assert "holds no prepared data; run `dvc repro prepare` first" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before any parent run was opened


def test_a_sweep_whose_parent_run_cannot_open_runs_no_job(prepared_slice, tmp_path):
    """Hydra would only warn about the callback's error and run every job without a parent."""
    prepared, _ = prepared_slice
    (tmp_path / "mlflow.db").write_text("not a database\n")
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = hydra_train(
        *sweep_overrides(prepared, tmp_path / "s", "train.batch_size=50"), cwd=tmp_path, db=db
    )
    assert done.returncode == 1, done.stderr[-3000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: the MLflow store {db} is unreadable (file is not a database)")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()  # no job ran


def test_a_failed_job_marks_its_run_and_the_parent_failed_not_running(prepared_slice, tmp_path):
    """A real failure: Lightning refuses `accelerator=mps`, which no Linux machine has."""
    prepared, _ = prepared_slice
    db = new_store(tmp_path)
    grid = ("train.batch_size=250", "trainer.accelerator=cpu,mps")
    done = hydra_train(*sweep_overrides(prepared, tmp_path / "s", *grid), cwd=tmp_path, db=db)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: trainer.accelerator=mps with trainer.devices=1 is"), line
    _, runs = mlflow_runs(db)
    (parent,) = [r for r in runs if store.SWEEP_TAG in r.data.tags]
    assert parent.info.status == "FAILED"
    children = [r for r in runs if store.PARENT_TAG in r.data.tags]
    status = {r.data.params.get("trainer.accelerator"): r.info.status for r in children}
    # The Trainer refuses mps before the run is opened; were one opened, it would be FAILED.
    assert status.pop("cpu") == "FINISHED" and set(status.values()) <= {"FAILED"}


def test_a_job_failing_after_training_marks_its_finished_run_failed(prepared_slice, tmp_path):
    """Lightning closes the run as FINISHED after fit; evaluate then finds no test split."""
    prepared = tmp_path / "prepared"
    shutil.copytree(prepared_slice[0], prepared)
    (prepared / "test_x.npy").unlink()
    db = new_store(tmp_path)
    overrides = sweep_overrides(prepared, tmp_path / "s", "train.batch_size=250")
    done = hydra_train(*overrides, cwd=tmp_path, db=db)
    assert done.returncode == 1 and "Traceback" not in done.stderr  # the missing file: an OSError
    _, runs = mlflow_runs(db)
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]  # the child and parent


def test_sweep_key_ignores_where_and_how_a_sweep_runs():
    def overrides(*task):
        return OmegaConf.create({"hydra": {"overrides": {"task": list(task)}}})

    assert sweep.sweep_overrides(
        overrides("train.epochs=5,10", "launcher=joblib", "train.batch_size=32,64", "force=true")
    ) == ["train.batch_size=32,64", "train.epochs=5,10"]
    assert (
        sweep.sweep_overrides(
            overrides("paths.prepared=/x", "hydra.sweep.dir=/y", "logger.tracking_uri=z")
        )
        == []
    )


def test_the_same_grid_typed_in_another_order_is_the_same_sweep():
    key = sweep.sweep_key(["train.batch_size=32,64", "train.epochs=5,10"])
    assert sweep.sweep_key(["train.batch_size=64,32", "train.epochs=10,5"]) == key
    assert sweep.sweep_key(["train.batch_size=32,64,128", "train.epochs=5,10"]) != key
    assert sweep.sweep_key(["train.batch_size=32,64"]) != key


def test_folders_are_named_by_the_sweep_and_its_points_not_the_time():
    """conf/'s own hydra.sweep, resolved as Hydra does for the sweep and for one job."""
    spec = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())["hydra"]["sweep"]

    def folders(*task: str) -> tuple[str, str]:
        hydra = {"sweep": spec, "overrides": {"task": list(task)}, "sweeper": {"params": None}}
        cfg = OmegaConf.create({"paths": {"sweeps": "s"}, "hydra": hydra, "objective": {}})
        return cfg.hydra.sweep.dir, cfg.hydra.sweep.subdir

    grid = ("train.batch_size=32,64", "train.epochs=5")
    key = sweep.sweep_key(list(grid))
    assert folders(*grid, "launcher=joblib")[0] == f"s/{key}"
    assert folders("train.batch_size=64,32", "train.epochs=5")[0] == f"s/{key}"
    assert folders("train.batch_size=32,64,128", "train.epochs=5")[0] != f"s/{key}"
    job = ("paths.prepared=/x/y", "train.epochs=5", "train.batch_size=32")
    assert folders(*job)[1] == "train.batch_size=32,train.epochs=5"
    assert folders("+trainer.note=a/b c")[1] == "+trainer.note=a_b_c"
    assert folders("launcher=joblib")[1] == "defaults"
    assert folders("train.lr=" + "1" * 300)[1].startswith("point-")


SUBMITIT_LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SUBMITIT_SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def test_launcher_slurm_composes_without_a_cluster(tmp_path):
    """conf/launcher/slurm.yaml as a user checks it on a machine without SLURM."""
    cluster = ("hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1")
    argv = [sys.executable, "-m", "lenet_mnist.run", "launcher=slurm", *cluster, "--cfg", "all"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = yaml.safe_load(done.stdout)
    launcher = cfg["hydra"]["launcher"]
    assert launcher["_target_"] == SUBMITIT_SLURM
    assert (launcher["partition"], launcher["gpus_per_node"]) == ("gpu", 1)
    assert (launcher["timeout_min"], launcher["tasks_per_node"], launcher["nodes"]) == (60, 1, 1)
    assert cfg["trainer"]["threads"] is None  # the mode's own count, as in dvc repro
    assert launcher["cpus_per_task"] == numerics.PORTABLE_THREADS
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


def test_submitit_local_runs_the_same_sweep_as_joblib(sweep_2x1, prepared_slice, tmp_path):
    """The 2x1 grid of sweep_2x1 again, each job a submitit process started from its pickle,
    in conf/'s own folders: named in the workers by the same resolvers, the same MLflow
    parent and children, the same numbers (portable numerics, one thread each) and report."""
    client, runs = mlflow_runs(sweep_2x1["db"])
    (parent,) = [r for r in runs if store.SWEEP_TAG in r.data.tags]
    kids = [r for r in runs if store.PARENT_TAG in r.data.tags]

    prepared, _ = prepared_slice
    db = new_store(tmp_path)
    grid = ("launcher=submitit_local", "train.batch_size=50,100")
    overrides = _in_default_folders(sweep_overrides(prepared, tmp_path, *grid), tmp_path / "s")
    done = hydra_train(*overrides, cwd=tmp_path, db=db)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client2, runs2 = mlflow_runs(db)
    (parent2,) = [r for r in runs2 if store.SWEEP_TAG in r.data.tags]
    kids2 = [r for r in runs2 if r.data.tags.get(store.PARENT_TAG) == parent2.info.run_id]
    assert len(kids2) == len(runs2) - 1 == 2

    assert parent2.info.status == parent.info.status == "FINISHED"
    for tag in (store.SWEEP_TAG, store.OVERRIDES_TAG):
        assert parent2.data.tags[tag] == parent.data.tags[tag]
    assert set(parent2.data.tags) == set(parent.data.tags)

    def by_size(children) -> dict:
        return {int(k.data.params["train.batch_size"]): k for k in children}

    old, new = by_size(kids), by_size(kids2)
    assert set(new) == set(old) == {50, 100}
    for size, kid in new.items():
        assert kid.info.status == "FINISHED"
        assert kid.data.tags[store.COMPLETE_TAG] == "true"
        for tag in (store.CONFIG_TAG, store.JOB_TAG):
            assert kid.data.tags[tag] == old[size].data.tags[tag]
        assert set(kid.data.params) == set(old[size].data.params)
        assert kid.data.params["numerics.threads"] == "1"  # portable's own, as in dvc repro
        assert 0.5 < kid.data.metrics["test_acc"] <= 1
        assert kid.data.metrics["test_acc"] == old[size].data.metrics["test_acc"]

    folder = _point_folders(tmp_path / "s", parent2, [50, 100])
    multirun = OmegaConf.load(folder / "multirun.yaml")
    assert multirun.hydra.launcher._target_ == SUBMITIT_LOCAL
    assert len(list((folder / ".submitit").glob("*/*_result.pkl"))) == 2  # a process per job
    report_old, report_new = sweep_2x1["sweep_dir"] / "report", folder / "report"
    assert sorted(p.name for p in report_new.iterdir()) == sorted(
        p.name for p in report_old.iterdir()
    )
    rows_old = (report_old / report.SUMMARY_CSV).read_text().splitlines()
    rows_new = (report_new / report.SUMMARY_CSV).read_text().splitlines()
    assert rows_new[0] == rows_old[0]  # the same columns
    assert [len(r.split(",")) for r in rows_new] == [len(r.split(",")) for r in rows_old]
    artifacts = {a.path for a in client2.list_artifacts(parent2.info.run_id)}
    assert artifacts == {a.path for a in client.list_artifacts(parent.info.run_id)}


def _point_folders(sweeps: Path, parent, sizes: list[int]) -> Path:
    """The sweep's one folder, named by its key, with a folder of outputs per grid point."""
    (folder,) = sweeps.iterdir()
    assert folder.name == parent.data.tags[store.SWEEP_TAG]
    for size in sizes:
        point = folder / f"train.batch_size={size},{ONE_EPOCH_EAGER}"
        for name in ("model/weights.safetensors", "train_history.csv", "test.json"):
            assert (point / name).is_file(), sorted(p.name for p in folder.iterdir())
    return folder


def test_a_diverged_grid_point_fails_its_run_and_the_sweep_goes_on(prepared_slice, tmp_path):
    """A rate too large for its batch is a result of a rate grid, not the end of the sweep."""
    db = new_store(tmp_path)
    grid = ("optimizer.lr=0.001,1e6",)
    done = hydra_train(
        *sweep_overrides(prepared_slice[0], tmp_path / "sweep", *grid), cwd=tmp_path, db=db
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    said = done.stdout + done.stderr  # Hydra logs to stdout
    assert "training diverged: the " in said and "the sweep goes on without this point" in said
    _, runs = mlflow_runs(db)
    kids = {r.data.params.get("optimizer.lr"): r for r in runs if store.PARENT_TAG in r.data.tags}
    assert kids["0.001"].data.tags[store.COMPLETE_TAG] == "true"
    assert kids["1000000.0"].info.status == "FAILED"
    assert store.COMPLETE_TAG not in kids["1000000.0"].data.tags
    assert (tmp_path / "sweep" / "report" / "summary.md").is_file()  # the sweep ended well
