"""The pipeline on a CUDA GPU, for the machine that has one:

    python .ci/gpu_check.py [--out FILE]

In a fresh clone of this repository (its data/raw copied in, when there is one, so that no
download is needed), it runs `dvc repro` end to end, trains the same config once more and
compares the weights bit for bit, then times `python -m lenet_mnist.run experiment=fast` to
its test accuracy. It prints the GPU's name with every figure, as Markdown (and into FILE).
On a machine without CUDA it says so in one line and exits 0: there is nothing to check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DVC = (sys.executable, "-m", "dvc")


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """Seconds the command took, and its output; a failure ends the check with its tail."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"gpu check: {' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return took, done.stdout + done.stderr


def weights_sha256(clone: Path) -> str:
    return hashlib.sha256((clone / "data/model/weights.safetensors").read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the Markdown figures here")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu check: no CUDA GPU on this machine (torch.cuda.is_available() is False)")
        return 0
    gpu = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="lenet-gpu-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        if (REPO / "data/raw").is_dir():
            shutil.copytree(REPO / "data/raw", clone / "data/raw")
        repro_s, _ = run([*DVC, "repro"], clone)
        epochs = json.loads((clone / "data/timings/train.json").read_text())["epochs"]
        per_epoch = [e["epoch_time_s"] for e in epochs]
        test_acc = json.loads((clone / "data/metrics/test.json").read_text())["test_acc"]
        first = weights_sha256(clone)
        again_s, _ = run([*DVC, "repro", "--force", "--single-item", "train"], clone)
        second = weights_sha256(clone)
        fast_s, said = run([sys.executable, "-m", "lenet_mnist.run", "experiment=fast"], clone)
        fast_acc = re.findall(r"test accuracy (\d\.\d+)", said)
    lines = [
        f"## The pipeline on {gpu} (torch {torch.__version__}, CUDA {torch.version.cuda})",
        "",
        "| figure | value |",
        "|---|---|",
        f"| `dvc repro` end to end | {repro_s:.1f} s, test accuracy {test_acc:.4f} |",
        f"| seconds per epoch (first; median of the rest) | {per_epoch[0]:.2f}; "
        f"{sorted(per_epoch[1:])[len(per_epoch[1:]) // 2]:.2f} |",
        f"| the same training again (`dvc repro -f -s train`) | {again_s:.1f} s |",
        f"| weights of the two trainings | {'IDENTICAL' if first == second else 'DIFFER'} "
        f"({first[:12]}, {second[:12]}) |",
        f"| `experiment=fast` (`python -m lenet_mnist.run`) | {fast_s:.1f} s to test accuracy "
        f"{fast_acc[-1] if fast_acc else '?'} |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
