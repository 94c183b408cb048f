"""Intervals over independent units (seeds, snapshots) and rank correlation with a bootstrap
interval over seeds (Phase 6: Delta loss against Gamma)."""
import functools

import numpy as np
from scipy import stats


def spearman(x_NxR, y_NxR) -> np.ndarray:
  """Spearman's rank correlation of the columns of x and y (ties get their average rank):
  shape (R,), nan where a column is constant. 1-D inputs give a scalar."""
  rx, ry = (stats.rankdata(np.asarray(v, np.float64), axis=0) for v in (x_NxR, y_NxR))
  rx, ry = rx - rx.mean(0), ry - ry.mean(0)
  denominator = np.sqrt(np.sum(rx * rx, 0) * np.sum(ry * ry, 0))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denominator > 0, np.sum(rx * ry, 0) / denominator, np.nan)


def bootstrap_spearman(x_PxS, y_PxS, rng: np.random.Generator, num_resamples: int = 2000,
                       level: float = 0.95) -> dict:
  """Spearman's rho between the seed means of x and y over P points, and a percentile
  bootstrap interval that resamples the S seeds (the same seeds for every point: points
  measured on one seed share its batches, so seeds, not points, are the independent units).

  x_PxS, y_PxS: (points, seeds). Returns {spearman, ci_low, ci_high, num_points, num_seeds}.
  """
  x_PxS, y_PxS = np.asarray(x_PxS, np.float64), np.asarray(y_PxS, np.float64)
  num_points, num_seeds = x_PxS.shape
  point = float(spearman(x_PxS.mean(1), y_PxS.mean(1)))
  draws_RxS = rng.integers(0, num_seeds, size=(num_resamples, num_seeds))
  resampled = spearman(x_PxS[:, draws_RxS].mean(-1), y_PxS[:, draws_RxS].mean(-1))
  resampled = resampled[np.isfinite(resampled)]
  tail = 100 * (1 - level) / 2
  low, high = (np.percentile(resampled, [tail, 100 - tail]) if resampled.size
               else (np.nan, np.nan))
  return dict(spearman=point, ci_low=float(low), ci_high=float(high), num_points=num_points,
              num_seeds=num_seeds)


def mean_interval(values, level: float = 0.95) -> dict:
  """Mean of independent measurements and its Student-t interval at `level`
  (mean ± t_{n-1} · std / sqrt(n), std with n - 1): {mean, ci_low, ci_high, n}; the interval
  is None for one value (nothing to estimate a spread from)."""
  v = np.asarray(values, np.float64)
  n, mean = v.size, float(v.mean())
  if n < 2:
    return dict(mean=mean, ci_low=None, ci_high=None, n=n)
  half = float(_t_quantile(0.5 + level / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
  return dict(mean=mean, ci_low=mean - half, ci_high=mean + half, n=n)


@functools.lru_cache(maxsize=None)
def _t_quantile(q: float, dof: int) -> float:
  """Student's t quantile; cached: a study summarises tens of thousands of cells over a few
  distinct seed counts, and scipy's ppf took most of the time (CIFAR-10 Phase 6C: 3 s)."""
  return float(stats.t.ppf(q, dof))


def sign_holds(values, mean: float) -> int:
  """How many of `values` share the sign of `mean` (a claim's replication count)."""
  return int(np.sum(np.sign(np.asarray(values, np.float64)) == np.sign(mean)))
