"""CI check: is what a new user sees the README's word?

    python .ci/first_screen.py README.md repro.log   # the log of `dvc repro` = the README's sample
    dvc metrics show | python .ci/first_screen.py --width 100   # no line wider than 100

The sample is the code block after the README's `<!-- dvc repro output -->` marker. Timings
(seconds, images per second) and run ids differ from run to run, so both sides have them
masked; every other character must match. A download source that fails before another one
delivers says so in one line, and only where it fails (the sample's machine had no internet),
so those lines are left out on both sides. Off the portable path (not x86-64 with AVX2) the
losses and accuracies may differ too: there every number is masked, and this says so.
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
SOURCE = re.compile(r"\(source: \S+\)$")
NUMBER = re.compile(r"\d[\d,.e+-]*")


def sample(readme: str) -> list[str]:
    after = readme.split(MARKER, 1)[1]
    block = after.split("```", 2)[1]
    return block.split("\n", 1)[1].rstrip("\n").splitlines()  # without the fence's language


def normalized(lines: list[str], every_number: bool) -> list[str]:
    out = []
    for line in lines:
        line = line.rstrip()
        if FAILED_SOURCE.match(line):
            continue
        line = SOURCE.sub("(source: <source>)", RUN_ID.sub("<run id>", TIMINGS.sub("<t>", line)))
        out.append(NUMBER.sub("<n>", line) if every_number else line)
    return out


def compare(readme: Path, log: Path) -> int:
    exact = portable_host()
    want = normalized(sample(readme.read_text()), not exact)
    got = normalized(log.read_text().splitlines(), not exact)
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
    verdict = "PASS" if widest <= limit else "FAIL"
    print(f"dvc metrics show: {verdict} ({widest} columns wide, at most {limit})")
    return 0 if widest <= limit else 1


if __name__ == "__main__":
    if sys.argv[1] == "--width":
        sys.exit(width(int(sys.argv[2])))
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
