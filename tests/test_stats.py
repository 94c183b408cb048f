"""Spearman's rho and its bootstrap interval over seeds."""
import numpy as np
from scipy import stats as scipy_stats

from creditfield import stats


def test_spearman_equals_scipy_and_is_invariant_to_monotone_maps():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=9), rng.normal(size=9)
  x[3] = x[5]  # a tie, ranked by its average rank
  assert abs(stats.spearman(x, y) - scipy_stats.spearmanr(x, y)[0]) < 1e-12
  assert stats.spearman(x, np.exp(x)) == 1.0 and stats.spearman(x, -x ** 3) == -1.0
  assert np.isnan(stats.spearman(x, np.ones(9)))


def test_bootstrap_interval_holds_the_estimate_and_shrinks_to_it_when_seeds_agree():
  rng = np.random.default_rng(1)
  gamma = np.linspace(0, 1, 6)[:, None] + 0.05 * rng.normal(size=(6, 3))
  noisy = -gamma + 0.3 * rng.normal(size=(6, 3))
  out = stats.bootstrap_spearman(gamma, noisy, np.random.default_rng(2))
  assert out["ci_low"] <= out["spearman"] <= out["ci_high"] and out["num_seeds"] == 3
  same = np.repeat(np.linspace(0, 1, 6)[:, None], 3, axis=1)
  exact = stats.bootstrap_spearman(same, -same, np.random.default_rng(2))
  assert exact["spearman"] == exact["ci_low"] == exact["ci_high"] == -1.0
