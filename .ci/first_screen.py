"""CI check: is what a new user sees the README's word?

    python .ci/first_screen.py README.md repro.log   # the log of `dvc repro` = the README's sample
    dvc metrics show | python .ci/first_screen.py --width 100   # no line wider than 100

The sample is the code block after the README's `<!-- dvc repro output -->` marker. Timings
(seconds, images per second) and run ids differ from run to run, so both sides have them
masked; every other character must match. A download source that fails before another one
delivers says so in one line, only where it fails (the sample's machine had no internet):
where the log has no such line, the sample's are left out. Off the portable path (not x86-64
with AVX2, or a GPU) the losses and accuracies differ too, and DVC rewrites dvc.lock: there
every number and DVC's lines about the lock are left out, and this says so.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

from compare_repro import portable_host

MARKER = "<!-- dvc repro output -->"
TIMINGS = re.compile(r"\d[\d,.]* (s|img/s)\b")
RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
FAILED_SOURCE = re.compile(r"^download: \S+ failed: .*; trying \S+$")
LOCK_LINES = re.compile(r"^(Updating lock file|To track the changes|To enable auto|\t)")
SOURCE = re.compile(r"\(source: \S+\)$")
NUMBER = re.compile(r"\d[\d,.e+-]*")


def sample(readme: str) -> list[str] | None:
    if MARKER not in readme:
        return None
    block = readme.split(MARKER, 1)[1].split("```", 2)[1]
    return block.split("\n", 1)[1].rstrip("\n").splitlines()  # without the fence's language


def normalized(lines: list[str], exact: bool, failed_sources: bool) -> list[str]:
    out = []
    for line in lines:
        line = line.rstrip()
        if (FAILED_SOURCE.match(line) and not failed_sources) or (
            not exact and (LOCK_LINES.match(line) or not line)
        ):
            continue
        line = SOURCE.sub("(source: <source>)", RUN_ID.sub("<run id>", TIMINGS.sub("<t>", line)))
        out.append(line if exact else NUMBER.sub("<n>", line))
    return out


def compare(readme: Path, log: Path) -> int:
    exact = portable_host()
    lines = sample(readme.read_text())
    if lines is None:
        print(f"first screen: FAIL ({readme} has no {MARKER} before its sample)")
        return 1
    printed = log.read_text().splitlines()
    failed_sources = any(FAILED_SOURCE.match(line) for line in printed)
    want = normalized(lines, exact, failed_sources)
    got = normalized(printed, exact, failed_sources)
    if want == got:
        how = "timings and run ids aside" if exact else "TOLERANCE PATH: every number aside"
        print(f"first screen: PASS (`dvc repro` printed the README's sample, {how})")
        return 0
    diff = list(difflib.unified_diff(want, got, "README sample", "dvc repro", lineterm="", n=1))
    print("first screen: FAIL (`dvc repro` printed other lines than the README's sample):")
    print("\n".join(line[:200] for line in diff[:60]))
    return 1


def width(limit: int) -> int:
    text = sys.stdin.read()
    print(text, end="")
    widest = max((len(line) for line in text.splitlines()), default=0)
    verdict = "PASS" if 0 < widest <= limit else "FAIL"
    print(f"dvc metrics show: {verdict} ({widest} columns wide, at most {limit})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    if sys.argv[1] == "--width":
        sys.exit(width(int(sys.argv[2])))
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
