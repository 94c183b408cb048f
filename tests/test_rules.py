"""Local update rules: exactness with oracle credit, proportionality, and the guard."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from creditfield import estimators
from creditfield import rules
from creditfield import student as student_lib


def _allclose_trees(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def test_oracle_inner_product_gives_exactly_the_backprop_gradient(spec, params, batch):
  x, y = batch
  oracle = student_lib.oracle_grads(spec, params, x, y)
  local = rules.local_grads(spec, params, x, y, oracle, "inner_product", 0.0)
  backprop = jax.grad(student_lib.mean_loss, argnums=1)(spec, params, x, y)
  _allclose_trees(local, backprop, rtol=1e-5, atol=1e-7)


def test_other_credit_with_inner_product_is_not_the_backprop_gradient(spec, params, batch):
  x, y = batch
  acts = student_lib.activations(spec, params, x, y)
  identity = jnp.broadcast_to(acts.delta_L, acts.hs.shape)
  local = rules.local_grads(spec, params, x, y, identity, "inner_product", 0.0)
  backprop = jax.grad(student_lib.mean_loss, argnums=1)(spec, params, x, y)
  assert not np.allclose(local["blocks"]["w1"], backprop["blocks"]["w1"], rtol=1e-3)
  # The head is updated with its exact gradient whatever the credit.
  _allclose_trees(local["head"], backprop["head"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("eta", [1e-3, 0.1, 1.0])
def test_target_shift_gradient_is_eta_times_inner_product_on_unit_credit(spec, params, batch,
                                                                        eta):
  x, y = batch
  oracle = student_lib.oracle_grads(spec, params, x, y)
  unit = oracle / jnp.linalg.norm(oracle, axis=-1, keepdims=True)
  shift = rules.local_grads(spec, params, x, y, unit, "target_shift", eta)
  inner = rules.local_grads(spec, params, x, y, unit, "inner_product", 0.0)
  # The target h_out - eta a^ is formed in float32, so allow rounding relative to each leaf.
  jax.tree.map(lambda s, g: np.testing.assert_allclose(
      s, eta * g, rtol=1e-3, atol=1e-3 * float(jnp.abs(eta * g).max())),
      shift["blocks"], inner["blocks"])


def test_frozen_embedding_gets_no_gradient(spec, params, batch):
  x, y = batch
  oracle = student_lib.oracle_grads(spec, params, x, y)
  g = rules.local_grads(spec, params, x, y, oracle, "cosine", 0.0, update_embed=False)
  assert float(jnp.abs(g["embed"]["w"]).max()) == 0.0


@pytest.mark.parametrize("rule", rules.RULES)
def test_hidden_bp_guard_every_rule_runs_with_a_non_oracle_credit(spec, params, batch, rule):
  x, y = batch
  guarded = spec.with_guard(True)
  est = estimators.identity(spec)
  acts = est.activations(params, x, y)
  credit = est.credit({}, params, acts, None)
  proj = rules.projections(jax.random.PRNGKey(0), spec)
  g = jax.jit(lambda p: rules.local_grads(guarded, p, x, y, credit, rule, 0.1, proj))(params)
  assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))
  assert float(jnp.abs(g["blocks"]["w1"]).max()) > 0


def test_unknown_rule_lists_the_valid_rules():
  with pytest.raises(ValueError, match="valid rules are inner_product"):
    rules.parse_rules("inner_product,sideways")


def test_zero_credit_under_local_ce_gives_exactly_zero_block_gradients(spec, params, batch):
  """With a = 0 local_ce's target is the block's own output: its gradient must be exactly 0
  (two separately rounded softmaxes once gave ~1e-9, which Adam turned into lr-sized steps)."""
  x, y = batch
  zero = jnp.zeros((spec.depth + 1, x.shape[0], spec.width))
  proj = rules.projections(jax.random.PRNGKey(0), spec)
  g = rules.local_grads(spec, params, x, y, zero, "local_ce", 0.1, proj)
  for leaf in jax.tree.leaves((g["blocks"], g["embed"])):
    assert float(jnp.abs(leaf).max()) == 0.0


def test_local_ce_surrogate_has_the_cross_entropy_gradient(spec, params, batch):
  x, y = batch
  oracle = student_lib.oracle_grads(spec, params, x, y)
  proj = rules.projections(jax.random.PRNGKey(0), spec)
  h_in = jax.random.normal(jax.random.PRNGKey(3), (x.shape[0], spec.width))
  out = jax.random.normal(jax.random.PRNGKey(4), (x.shape[0], spec.width))

  def cross_entropy(o):
    logits = lambda h: student_lib.layer_norm(h) @ proj[1]
    target = jax.lax.stop_gradient(h_in + o - 0.3 * oracle[1] / jnp.linalg.norm(
        oracle[1], axis=-1, keepdims=True))
    q = jax.nn.softmax(logits(target))
    return -jnp.sum(q * jax.nn.log_softmax(logits(h_in + o)), -1).mean()

  surrogate = jax.grad(lambda o: rules.rule_loss("local_ce", o, h_in, oracle[1], 0.3, proj[1]))
  np.testing.assert_allclose(surrogate(out), jax.grad(cross_entropy)(out), rtol=1e-4, atol=1e-7)
