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


def test_mean_interval_is_the_student_t_interval_and_covers_at_its_level():
  """Three values 1, 2, 3: mean 2, std 1, t_{2, 0.975} = 4.303, so 2 ± 4.303 / sqrt(3); and
  over many draws of 3 normals the interval holds the true mean about 95% of the time."""
  out = stats.mean_interval([1.0, 2.0, 3.0])
  half = 4.302652729911275 / np.sqrt(3)
  assert out["mean"] == 2.0 and out["n"] == 3
  assert abs(out["ci_low"] - (2 - half)) < 1e-9 and abs(out["ci_high"] - (2 + half)) < 1e-9
  assert stats.mean_interval([5.0])["ci_low"] is None
  rng = np.random.default_rng(3)
  hits = [(o["ci_low"] <= 1.0 <= o["ci_high"])
          for o in (stats.mean_interval(1.0 + rng.normal(size=3)) for _ in range(4000))]
  assert 0.93 < np.mean(hits) < 0.97
  assert stats.sign_holds([-1.0, -2.0, 0.5], -0.8) == 2
