"""Seeds as a vmapped axis: S seeds in one program give what S single-seed runs give."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from creditfield import config_defaults
from creditfield import estimator_training
from creditfield import estimators
from creditfield import phase6_sweep
from creditfield import rng
from creditfield import rules
from creditfield import sampling
from creditfield import seeds as seeds_lib

SEEDS = (0, 1, 2)


def _allclose(a, b, **kw):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kw), a, b)


@pytest.fixture
def data(spec):
  kx, ky = jax.random.split(jax.random.PRNGKey(5))
  return (jax.random.normal(kx, (256, spec.in_dim)),
          jax.random.randint(ky, (256,), 0, spec.num_outputs))


def _estimator(spec, name):
  credit = config_defaults.base_config().credit
  credit.vector_field.hidden = (16,)
  credit.scalar_bridge.hidden = (16,)
  return estimators.make(name, spec, credit, 2)


@pytest.mark.parametrize("name", ["vector_field"])
def test_vmapped_seeds_train_estimators_as_single_seed_runs(spec, params, data, name):
  x, y = data
  est = _estimator(spec, name)
  cfg = ml_collections.ConfigDict(dict(
      steps=6, batch_size=16, lr=1e-3, schedule="cosine", warmup_steps=2, ema_decay=0.9,
      grad_clip=1.0, log_every=3, credit_params="ema", augment="none"))
  keys = seeds_lib.keys(lambda s: rng.estimator_stream(s, name, 2), SEEDS)
  records = []
  together = estimator_training.train_seeds(est, params, x, y, cfg, keys,
                                            [dict(seed=s) for s in SEEDS],
                                            on_metrics=records.extend)
  for i, s in enumerate(SEEDS):
    alone = estimator_training.train(est, params, x, y, cfg, keys[i])
    _allclose(seeds_lib.pick(together, i), alone, rtol=2e-5, atol=1e-6)
  assert sorted({(r["seed"], r["step"]) for r in records}) == [
      (s, t) for s in SEEDS for t in range(6)]


def test_vmapped_seeds_phase6_sweeps_equal_single_seed_sweeps(spec, params, data):
  x, y = data
  est = estimators.make("forward_gradient", spec, config_defaults.base_config().credit, 2)
  batches = seeds_lib.stack([sampling.sample_batches(jax.random.PRNGKey(10 + s), x, y, 3, 16)
                             for s in SEEDS])
  keys = seeds_lib.keys(lambda s: rng.stream(s, "phase6"), SEEDS)
  phi = seeds_lib.stack([{}] * len(SEEDS))
  proj = rules.projections(jax.random.PRNGKey(0), spec)
  lrs = jnp.asarray([1e-3, 1e-1])
  kw = dict(optimizer="adam", update_embed=True)
  rule = rules.rule_index("target_shift")
  du_S, dh_S = phase6_sweep.sweep_seeds(est, phi, params, *batches, x[:64], y[:64], keys, lrs, rule,
                                   0.3, proj, **kw)
  assert du_S.shape == (len(SEEDS), 2, 3)
  for i in range(len(SEEDS)):
    du, dh = phase6_sweep.sweep(est, {}, params, batches[0][i], batches[1][i], x[:64], y[:64],
                           keys[i], lrs, rule, 0.3, proj, **kw)
    np.testing.assert_allclose(du_S[i], du, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dh_S[i], dh, rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(du_S[0] - du_S[1]).max()) > 0  # seeds differ
