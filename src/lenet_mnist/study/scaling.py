"""The critical batch size from steps and examples to a target (McCandlish et al. 2018,
"An Empirical Model of Large-Batch Training").

The paper's trade-off (S/S_min − 1)(E/E_min − 1) = 1 between the optimizer steps S and
the training examples E = B·S that reach a given accuracy is, solved for S,

    S(B) = S_min + E_min / B,

linear in (S_min, E_min) with regressor 1/B. Small batches need E_min examples and many
steps; large ones need at least S_min steps however many examples each takes. The batch
size between the two regimes is B_crit = E_min / S_min.

The fit weighs every run's relative error, (S − S(B)) / S, so runs at large batch sizes,
with few steps, count as much as runs with many; its uncertainty is a bootstrap over runs.
The paper predicts B_crit from the gradients alone with the noise scale B_simple
(lenet_mnist.training.probes): `simple_at` reads it where a run reached the target,
`averaged_simple` averages its two terms over training up to there, as the paper does.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

DRAWS = 2000  # bootstrap resamples
SEED = 0  # the bootstrap's generator: the same runs give the same report
LEVEL = 0.95


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
    """B_crit = E_min/S_min where both are positive. A fit with S_min ≤ 0 shows no floor on
    the steps in the batch sizes measured (B_crit beyond them: inf); one with E_min ≤ 0
    shows no gain from larger batches at all (0); with both ≤ 0 it is undefined (NaN)."""
    if s_min > 0:
        return max(e_min, 0.0) / s_min
    return math.inf if e_min > 0 else math.nan


def least_squares(batch_sizes: Sequence[float], steps: Sequence[float]) -> tuple[float, float]:
    """(S_min, E_min) minimizing Σ ((S_i − S_min − E_min/B_i) / S_i)²."""
    b, s = np.asarray(batch_sizes, dtype=float), np.asarray(steps, dtype=float)
    design = np.column_stack([np.ones_like(b), 1 / b]) / s[:, None]
    (s_min, e_min), *_ = np.linalg.lstsq(design, np.ones_like(s), rcond=None)
    return float(s_min), float(e_min)


def fit(batch_sizes: Sequence[int], steps: Sequence[float]) -> Fit | None:
    """The fit over runs (one batch size and step count each); None with fewer than two
    distinct batch sizes, which cannot separate S_min from E_min."""
    if len(batch_sizes) != len(steps):
        raise ValueError(f"{len(batch_sizes)} batch sizes for {len(steps)} step counts")
    sizes = tuple(sorted(set(batch_sizes)))
    if len(sizes) < 2:
        return None
    s_min, e_min = least_squares(batch_sizes, steps)
    low, high = bootstrap(batch_sizes, steps)
    return Fit(s_min, e_min, low, high, len(steps), sizes)


def _resamples(batch_sizes: np.ndarray, draws: int, seed: int) -> Iterator[np.ndarray]:
    """Indices of `draws` resamples of the runs with replacement (seeded: the same runs give
    the same report), less those with one batch size, which cannot be fitted."""
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        idx = rng.integers(0, len(batch_sizes), len(batch_sizes))
        if len(set(batch_sizes[idx])) >= 2:
            yield idx


def _percentiles(found: list[float]) -> tuple[float, float]:
    """The 95% percentile interval, without interpolation (inverted CDF): defined next to inf."""
    if not found:
        return math.nan, math.nan
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(found, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def bootstrap(
    batch_sizes: Sequence[int], steps: Sequence[float], draws: int = DRAWS, seed: int = SEED
) -> tuple[float, float]:
    """B_crit's 95% percentile interval over resamples of the runs. An undefined B_crit
    (NaN) is dropped, an infinite one kept, so the interval may be open above."""
    b, s = np.asarray(batch_sizes, dtype=float), np.asarray(steps, dtype=float)
    found = [critical(*least_squares(b[i], s[i])) for i in _resamples(b, draws, seed)]
    return _percentiles([v for v in found if not math.isnan(v)])


def ratio_interval(
    sizes: Sequence[int], steps: Sequence[float], simples: Sequence[float], draws: int, seed: int
) -> tuple[float, float]:
    """B_simple / B_crit's 95% percentile interval: each resample refits B_crit and takes
    the median B_simple of the same runs; one with B_crit not finite and positive is skipped."""
    b, s, n = np.asarray(sizes, float), np.asarray(steps, float), np.asarray(simples, float)
    found = []
    for idx in _resamples(b, draws, seed):
        crit = critical(*least_squares(b[idx], s[idx]))
        if 0 < crit < math.inf:
            found.append(float(np.median(n[idx])) / crit)
    return _percentiles(found)


def curve(f: Fit, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(examples, steps) of the fitted trade-off at the given batch sizes, to draw it."""
    steps = f.s_min + f.e_min / sizes
    return sizes * steps, steps


def simple_at(noise: Sequence[tuple[int, float]], iteration: int) -> float | None:
    """B_simple logged nearest to `iteration` (the later one on a tie), None if none was.

    The noise scale is measured at epochs' ends, a target is reached at any update: the
    nearest epoch end is the measurement closest to the state that reached the target.
    """
    if not noise:
        return None
    return min(noise, key=lambda sv: (abs(sv[0] - iteration), -sv[0]))[1]


def median_simple(
    noises: Sequence[Sequence[tuple[int, float]]], iterations: Sequence[int]
) -> tuple[float, int] | None:
    """The median over runs of B_simple where each reached the target, and how many runs
    had a noise scale to give; None if none had."""
    found = [simple_at(n, i) for n, i in zip(noises, iterations, strict=True)]
    values = [v for v in found if v is not None]
    return (statistics.median(values), len(values)) if values else None


def averaged_simple(terms: Sequence[tuple[int, float, float]], iteration: int) -> float | None:
    """B_simple over training up to `iteration`: the mean of tr(Σ) over the mean of |G|²,
    over every epoch's end up to the first at or after it. Averaging each term first, as
    McCandlish et al. do, keeps the late epochs' near-zero |G|² estimates from blowing up
    single ratios. None if no term was logged or the mean |G|² is not positive."""
    ends = [step for step, _, _ in terms if step >= iteration]
    last = min(ends, default=max((s for s, _, _ in terms), default=-1))
    kept = [(g, t) for step, g, t in terms if step <= last]
    if not kept:
        return None
    grad_sq = statistics.fmean(g for g, _ in kept)
    return statistics.fmean(t for _, t in kept) / grad_sq if grad_sq > 0 else None
