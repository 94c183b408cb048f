"""The no-hidden-BP guard (DESIGN.md §2): proof that non-oracle estimators use no hidden BP.

With the guard on, any reverse-mode differentiation through a hidden block's input
raises. The oracle must raise (so the guard works); every other estimator must still
train and give finite credit; forward-mode jvp stays legal.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from creditfield import config_defaults
from creditfield import estimator_training
from creditfield import estimators
from creditfield import guard
from creditfield import student as student_lib


def _credit_config():
  c = config_defaults.base_config().credit
  c.M = 2
  c.vector_field.hidden = (16,)
  c.scalar_bridge.hidden = (16,)
  return c


def _train_config():
  return ml_collections.ConfigDict(dict(
      steps=3, batch_size=8, lr=1e-3, schedule="constant", warmup_steps=0, ema_decay=0.9,
      grad_clip=1.0, log_every=3, credit_params="ema", augment="none"))


def test_hidden_bp_guard_makes_the_oracle_raise(spec, params, batch):
  x, y = batch
  with pytest.raises(guard.HiddenBackpropError, match="no-hidden-BP guard"):
    student_lib.oracle_grads(spec.with_guard(True), params, x, y)
  with pytest.raises(guard.HiddenBackpropError):
    jax.jit(jax.grad(lambda p: student_lib.mean_loss(spec.with_guard(True), p, x, y)))(params)


@pytest.mark.parametrize("name", [n for n in estimators.NAMES if n not in estimators.BACKPROP])
@pytest.mark.parametrize("targets", ["fd", "jvp"])
def test_hidden_bp_guard_non_oracle_estimators_train_and_give_finite_credit(
    spec, params, batch, name, targets):
  x, y = batch
  cfg = _credit_config()
  cfg.targets = targets
  cfg.forward_gradient.targets = targets
  est = estimators.make(name, spec, cfg)
  assert est.spec.guarded, f"{name} must run under the guard"
  phi = estimator_training.train(est, params, x, y, _train_config(), jax.random.PRNGKey(1))
  acts = est.activations(params, x, y)
  credit = jax.jit(est.credit)(phi, params, acts, jax.random.PRNGKey(2))
  assert credit.shape == (spec.depth + 1, x.shape[0], spec.width)
  assert bool(jnp.all(jnp.isfinite(credit)))


@pytest.mark.parametrize("options", [
    dict(contrastive=0.1, smoothness=0.1), dict(regression="forward_gradient", residual=True)])
def test_hidden_bp_guard_vector_field_options_train_under_the_guard(spec, params, batch, options):
  """The contrastive term differentiates the EMA value net's input, never the student."""
  x, y = batch
  cfg = _credit_config()
  cfg.vector_field.update(options)
  est = estimators.make("vector_field", spec, cfg)
  phi = estimator_training.train(est, params, x, y, _train_config(), jax.random.PRNGKey(1))
  credit = jax.jit(est.credit)(phi, params, est.activations(params, x, y), jax.random.PRNGKey(2))
  assert bool(jnp.all(jnp.isfinite(credit)))


def test_hidden_bp_guard_allows_forward_mode_and_is_exact(spec, params, batch):
  x, y = batch
  hs, _ = student_lib.forward(spec, params, x)
  v = jax.random.normal(jax.random.PRNGKey(4), hs[0].shape)
  f = lambda s: lambda h: student_lib.forward_from(s, params, h, 0, y)
  guarded = jax.jvp(f(spec.with_guard(True)), (hs[0],), (v,))
  plain = jax.jvp(f(spec), (hs[0],), (v,))
  np.testing.assert_allclose(guarded[0], plain[0], rtol=1e-6)
  np.testing.assert_allclose(guarded[1], plain[1], rtol=1e-5, atol=1e-7)


def test_hidden_bp_guard_allows_a_block_gradient_wrt_its_own_params(spec, params, batch):
  """Local rules differentiate a block in its own parameters, input under stop-gradient."""
  x, y = batch
  hs, _ = student_lib.forward(spec, params, x)
  block0 = jax.tree.map(lambda p: p[0], params["blocks"])
  local = lambda s: jax.grad(lambda bp: student_lib.residual_fn(s)(
      bp, jax.lax.stop_gradient(hs[0])).sum())(block0)
  chex_equal = jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), local(spec.with_guard(True)),
      local(spec))
  del chex_equal
