"""CI checks of reproduction, beside `historical` (the committed dvc.lock, in .ci/run):

    determinism          the same training twice gives the same weights, bit for bit
    restart              a training killed (kill -9) and resumed gives those weights too
    determinism-restart  a second killed-and-resumed training gives them again

Each runs the pipeline's own stage commands, as dvc.yaml spells them, in folders under a
temporary directory, each with its own params.yaml and MLflow store, on a slice of the real
MNIST that the download stage fetches there (so `historical` may run beside them). On a host
where the portable kernels do not apply (not x86-64 with AVX2) or with a GPU, bits may
differ: there a check compares the trainings' final validation accuracy within a tolerance,
and says so.

    python .ci/checks.py determinism [restart ...]    # exit 1 when any check fails
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from compare_repro import portable_host

REPO = Path(__file__).resolve().parents[1]
SLICE = {"data": {"train_limit": 3000, "val_size": 500, "test_limit": 500}, "train": {"epochs": 4}}
TOLERANCE = 0.01  # validation accuracy, off the portable path
WEIGHTS = Path("data/model/weights.safetensors")
CHECKPOINT = Path("data/checkpoints/train.pt")


def stage_command(stage: str) -> list[str]:
    """The stage's command as dvc.yaml spells it, run by this interpreter."""
    argv = shlex.split(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["cmd"])
    return [sys.executable, *argv[1:]] if argv[0] == "python" else argv


class Slice:
    """A folder per training over one prepared slice, laid out as the repository is."""

    def __init__(self, root: Path) -> None:
        self.root = root
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        for group, values in SLICE.items():
            params[group].update(values)
        params["trainer"]["enable_progress_bar"] = False
        self.params = root / "params.yaml"
        self.params.write_text(yaml.safe_dump(params, sort_keys=False))
        prepare = self.folder("prepared")
        self.run(prepare, "download")  # its own copy: `historical` may delete the repo's
        self.run(prepare, "prepare")
        self.prepared = prepare / "data/prepared"

    def folder(self, name: str) -> Path:
        path = self.root / name
        (path / "data").mkdir(parents=True)
        if hasattr(self, "prepared"):
            (path / "data/prepared").symlink_to(self.prepared)
        return path

    def argv(self, stage: str) -> list[str]:
        return [*stage_command(stage), "--params", str(self.params)]

    def run(self, cwd: Path, stage: str) -> str:
        done = subprocess.run(self.argv(stage), cwd=cwd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{stage} in {cwd} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def train(self, name: str) -> Path:
        """An uninterrupted training."""
        path = self.folder(name)
        self.run(path, "train")
        return path

    def train_killed_and_resumed(self, name: str) -> Path:
        """A training killed with SIGKILL once its first epoch's checkpoint is saved, then
        run again by the same command, which must resume it before its last epoch."""
        path = self.folder(name)
        proc = subprocess.Popen(self.argv("train"), cwd=path, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while saved_epoch(path / CHECKPOINT) < 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"restart: the training in {path} ended before its first checkpoint")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        said = self.run(path, "train")
        resumed = re.search(r"resuming after epoch (\d+)", said)
        if not resumed or int(resumed[1]) >= SLICE["train"]["epochs"]:
            sys.exit(f"restart: the training in {path} did not resume mid-way: {said[-500:]}")
        return path


def saved_epoch(checkpoint: Path) -> int:
    """The epoch a checkpoint holds; 0 while there is none, or it is being replaced."""
    import torch

    try:
        return torch.load(checkpoint, weights_only=True)["epoch"] + 1  # Lightning's, from 0
    except (OSError, EOFError, RuntimeError):
        return 0


def sha256(folder: Path) -> str:
    return hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()


def val_acc(folder: Path) -> float:
    rows = list(csv.DictReader((folder / "data/metrics/train_history.csv").open()))
    return float(rows[-1]["val_acc"])


def same(name: str, a: Path, b: Path, exact: bool) -> bool:
    """Print the check's verdict: weights bit for bit, or accuracy within the tolerance."""
    if exact:
        ok = sha256(a) == sha256(b)
        detail = f"weights {sha256(a)[:12]} and {sha256(b)[:12]}"
    else:
        ok = abs(val_acc(a) - val_acc(b)) <= TOLERANCE
        detail = f"TOLERANCE PATH: val acc {val_acc(a):.4f} and {val_acc(b):.4f}"
    print(f"check {name}: {'PASS' if ok else 'FAIL'} ({detail}; {a.name} vs {b.name})")
    return ok


def main(names: list[str]) -> int:
    known = ("determinism", "restart", "determinism-restart")
    if not names or set(names) - set(known):
        print(f"usage: python .ci/checks.py {{{','.join(known)}}} ...", file=sys.stderr)
        return 2
    exact = portable_host()
    if not exact:
        print("checks: not x86-64 with AVX2, or a GPU is present: comparing accuracy, not bits")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # each folder's own sqlite:///mlflow.db
    with tempfile.TemporaryDirectory(prefix="lenet-checks-") as tmp:
        work = Slice(Path(tmp))
        whole = work.train("whole") if {"determinism", "restart"} & set(names) else None
        results = []
        if "determinism" in names:
            results.append(same("determinism", whole, work.train("again"), exact))
        if "restart" in names or "determinism-restart" in names:
            first = work.train_killed_and_resumed("restarted")
            if "restart" in names:
                results.append(same("restart", whole, first, exact))
            if "determinism-restart" in names:
                second = work.train_killed_and_resumed("restarted-again")
                results.append(same("determinism-restart", first, second, exact))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
