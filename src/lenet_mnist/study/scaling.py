"""The critical batch size from steps and examples to a target, S(B) = S_min + E_min/B
(McCandlish et al. 2018), and its noise-scale prediction B_simple: see docs/study.md#method."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lenet_mnist.study.runs import LEVEL

DRAWS = 2000  # bootstrap resamples
SEED = 0  # the bootstrap's generator: the same runs give the same report


@dataclass(frozen=True)
class Fit:
    """S(B) = S_min + E_min/B fitted to runs, with a bootstrap interval for B_crit."""

    s_min: float
    e_min: float
    low: float  # B_crit's 95% percentile interval, NaN if no resample gave one
    high: float
    runs: int
    batch_sizes: tuple[int, ...]

    @property
    def b_crit(self) -> float:
        return critical(self.s_min, self.e_min)

    def ratio(self, simple: float | None) -> float:
        """B_simple / B_crit, NaN where B_simple is missing or B_crit not finite and positive."""
        b = self.b_crit
        return simple / b if simple is not None and 0 < b < math.inf else math.nan


def critical(s_min: float, e_min: float) -> float:
    """E_min/S_min; inf where S_min ≤ 0 (no floor on the steps in the sizes measured), 0 where
    E_min ≤ 0 (no gain from larger batches), NaN where both are."""
    return max(e_min, 0.0) / s_min if s_min > 0 else math.inf if e_min > 0 else math.nan


def least_squares(batch_sizes: Sequence[float], steps: Sequence[float]) -> tuple[float, float]:
    """(S_min, E_min) minimizing Σ ((S_i − S_min − E_min/B_i) / S_i)²."""
    b, s = np.asarray(batch_sizes, dtype=float), np.asarray(steps, dtype=float)
    design = np.column_stack([np.ones_like(b), 1 / b]) / s[:, None]
    (s_min, e_min), *_ = np.linalg.lstsq(design, np.ones_like(s), rcond=None)
    return float(s_min), float(e_min)


def fit(batch_sizes: Sequence[int], steps: Sequence[float]) -> Fit | None:
    """None below two batch sizes: one cannot separate S_min from E_min."""
    if len(batch_sizes) != len(steps):
        raise ValueError(f"{len(batch_sizes)} batch sizes for {len(steps)} step counts")
    sizes = tuple(sorted(set(batch_sizes)))
    if len(sizes) < 2:
        return None
    s_min, e_min = least_squares(batch_sizes, steps)
    low, high = bootstrap(batch_sizes, steps)
    return Fit(s_min, e_min, low, high, len(steps), sizes)


def bootstrap(
    batch_sizes: Sequence[int],
    steps: Sequence[float],
    simples: Sequence[float] | None = None,
    draws: int = DRAWS,
) -> tuple[float, float]:
    """B_crit's percentile interval over seeded resamples (an infinite B_crit kept: it may be
    open above); with `simples`, that of B_simple / B_crit (docs/study.md, the reports)."""
    b, s = np.asarray(batch_sizes, dtype=float), np.asarray(steps, dtype=float)
    rng, found = np.random.default_rng(SEED), []
    for _ in range(draws):
        idx = rng.integers(0, len(b), len(b))
        if len(set(b[idx])) < 2:
            continue
        crit = critical(*least_squares(b[idx], s[idx]))
        if simples is None and not math.isnan(crit):
            found.append(crit)
        elif simples is not None and 0 < crit < math.inf:
            found.append(float(np.median(np.asarray(simples, dtype=float)[idx])) / crit)
    if not found:
        return math.nan, math.nan
    tail = (1 - LEVEL) / 2  # percentiles without interpolation (inverted CDF): defined beside inf
    low, high = np.quantile(found, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def curve(f: Fit, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(examples, steps) of the fitted trade-off at the given batch sizes, to draw it."""
    steps = f.s_min + f.e_min / sizes
    return sizes * steps, steps


def simple_at(noise: Sequence[tuple[int, float]], iteration: int) -> float | None:
    """B_simple logged nearest to `iteration` (the later one on a tie), None if none was:
    measured at epochs' ends, the nearest is closest to the state that reached the target."""
    return min(noise, key=lambda sv: (abs(sv[0] - iteration), -sv[0]), default=(0, None))[1]


def median_simple(
    noises: Sequence[Sequence[tuple[int, float]]], iterations: Sequence[int]
) -> tuple[float, int] | None:
    """The median over runs of B_simple where each reached the target, and how many had one."""
    found = [simple_at(n, i) for n, i in zip(noises, iterations, strict=True)]
    values = [v for v in found if v is not None]
    return (statistics.median(values), len(values)) if values else None


def averaged_simple(terms: Sequence[tuple[int, float, float]], iteration: int) -> float | None:
    """Mean tr(Σ) over mean |G|² at the epochs' ends up to the first at or after `iteration`:
    averaged first, as the late epochs' near-zero |G|² would blow up single ratios."""
    ends = [step for step, _, _ in terms if step >= iteration]
    last = min(ends, default=max((s for s, _, _ in terms), default=-1))
    kept = [(g, t) for step, g, t in terms if step <= last]
    if not kept:
        return None
    grad_sq = statistics.fmean(g for g, _ in kept)
    return statistics.fmean(t for _, t in kept) / grad_sq if grad_sq > 0 else None
