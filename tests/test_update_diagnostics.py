"""Update-level diagnostics, credit options, FA and the grid correlation: exact cases."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from creditfield import config_defaults
from creditfield import perturb
from creditfield import estimators
from creditfield import rules as rules_lib
from creditfield import student as student_lib
from creditfield import update_diagnostics
from creditfield.estimators import feedback
from creditfield.estimators import options
from creditfield.studies import local_train as local_train_study

# Jitted once per spec (eager JAX dispatches op by op: ten times slower for these tests).
_measure = jax.jit(update_diagnostics.measure, static_argnums=(0, 7, 10))
_projected_size = jax.jit(options.projected_size, static_argnums=0)
_correction = jax.jit(options.forward_gradient_correction, static_argnums=(0, 6, 7))


def _setup(spec, params, batch):
  x, y = batch
  hs, _ = student_lib.forward(spec, params, x)
  g = student_lib.oracle_grads(spec, params, x, y)
  return x, y, hs, g, rules_lib.projections(jax.random.PRNGKey(3), spec)


def test_oracle_credit_under_inner_product_is_aligned_with_backprop_everywhere(
    spec, params, batch):
  x, y, hs, g, proj = _setup(spec, params, batch)
  m = _measure(spec, params, x, y, hs, g, g, "inner_product", 0.0, proj, True)
  np.testing.assert_allclose(m["update_alignment"], 1.0, atol=1e-5)
  np.testing.assert_allclose(m["norm_ratio"], 1.0, atol=1e-6)
  np.testing.assert_allclose(m["stream_norm"], jnp.linalg.norm(hs, axis=-1).mean(-1), rtol=1e-6)
  flat = update_diagnostics.flat(m)
  assert flat["update_alignment"] == pytest.approx(1.0, abs=1e-5)
  assert flat["update_alignment_w2"] == pytest.approx(1.0, abs=1e-5)
  assert flat["stream_norm"] == pytest.approx(float(m["stream_norm"][-1]))


def test_zero_credit_and_a_frozen_embedding_make_no_update(spec, params, batch):
  x, y, hs, g, proj = _setup(spec, params, batch)
  m = _measure(spec, params, x, y, hs, jnp.zeros_like(g), g, "inner_product", 0.0, proj, True)
  np.testing.assert_array_equal(m["update_alignment"], 0.0)
  np.testing.assert_array_equal(m["norm_ratio"], 0.0)
  frozen = _measure(spec, params, x, y, hs, g, g, "inner_product", 0.0, proj, False)
  assert float(frozen["update_alignment"][0]) == 0.0  # the embedding: no update
  np.testing.assert_allclose(frozen["update_alignment"][1:], 1.0, atol=1e-5)


def test_radial_and_mean_fractions_are_the_credits_components(spec, params, batch):
  _, _, hs, g, _ = _setup(spec, params, batch)
  centred = hs - hs.mean(-1, keepdims=True)
  np.testing.assert_allclose(options.radial_fraction(3.0 * centred, hs), 1.0, atol=1e-6)
  np.testing.assert_allclose(options.radial_fraction(-centred, hs), -1.0, atol=1e-6)
  np.testing.assert_allclose(options.mean_fraction(jnp.ones_like(hs)), 1.0, atol=1e-6)
  removed = options.remove_radial(g, hs, with_mean=True)
  np.testing.assert_allclose(options.radial_fraction(removed, hs), 0.0, atol=1e-5)
  np.testing.assert_allclose(options.mean_fraction(removed), 0.0, atol=1e-5)
  # Only those components go: what is left of g is unchanged.
  np.testing.assert_allclose(options.remove_radial(removed, hs, with_mean=True), removed,
                             atol=1e-7)


def test_projected_size_of_the_exact_direction_is_the_exact_gradient(spec, params, batch):
  """D_u l along u = g^ is ||g||: sizing the oracle's own direction gives g back; any scale
  or sign of the direction gives the same."""
  x, y, hs, g, _ = _setup(spec, params, batch)
  for c in (1.0, -0.01, 50.0):
    sized = _projected_size(spec, params, hs[:-1], y, c * g[:-1])
    np.testing.assert_allclose(sized, g[:-1], rtol=1e-4, atol=1e-7)


def test_forward_gradient_correction_keeps_the_exact_credit_and_is_unbiased(spec, params, batch):
  """With exact jvp targets the correction of the oracle is exactly 0; of any other credit it
  is an unbiased estimate of g: its mean over many keys approaches g."""
  x, y, hs, g, _ = _setup(spec, params, batch)
  correct = lambda a, key, m: _correction(
      spec, params, hs[:-1], y, a, key, m)
  np.testing.assert_allclose(correct(g[:-1], jax.random.PRNGKey(0), 4), g[:-1], rtol=1e-4,
                             atol=1e-6)
  identity = jnp.broadcast_to(g[-1], g[:-1].shape)
  keys = jax.random.split(jax.random.PRNGKey(1), 512)
  mean = jax.vmap(lambda k: correct(identity, k, 8))(keys).mean(0)
  err = lambda a: float(jnp.linalg.norm(a - g[:-1]) / jnp.linalg.norm(g[:-1]))
  assert err(mean) < 0.25 * err(identity), (err(mean), err(identity))


def test_orthogonal_directions_are_orthogonal_and_isotropic():
  """Each sample's M directions are orthogonal with length sqrt(D), and E[v v^T] = I."""
  v = perturb.sample_directions(jax.random.PRNGKey(0), (3, 2000, 8), "orthogonal")
  gram = jnp.einsum("mbd,nbd->bmn", v, v)
  np.testing.assert_allclose(gram, jnp.broadcast_to(8.0 * jnp.eye(3), gram.shape), atol=1e-4)
  second_moment = jnp.einsum("mbd,mbe->de", v, v) / (3 * 2000)
  np.testing.assert_allclose(second_moment, jnp.eye(8), atol=0.05)


def test_orthogonal_correction_is_exact_at_M_equal_D_and_less_noisy_than_gaussian(
    spec, params, batch):
  """With D orthogonal directions the forward gradient is (D/D) P g = g whatever the control
  variate; at M = D/2 its error is about half the Gaussian directions' (D/M - 1 against
  (D+1)/M, times ||g - a||^2)."""
  x, y, hs, g, _ = _setup(spec, params, batch)
  width = spec.width
  zeros = jnp.zeros_like(g[:-1])
  exact = _correction(spec, params, hs[:-1], y, zeros, jax.random.PRNGKey(0), width, "orthogonal")
  np.testing.assert_allclose(exact, g[:-1], rtol=1e-4, atol=1e-6)
  keys = jax.random.split(jax.random.PRNGKey(1), 64)
  m = width // 2

  def mean_error(kind):
    corrected = jax.vmap(lambda k: _correction(spec, params, hs[:-1], y, zeros, k, m, kind))(keys)
    return float(jnp.mean(jnp.sum(jnp.square(corrected - g[:-1]), -1)))
  orthogonal, gaussian = mean_error("orthogonal"), mean_error("gaussian")
  expected = (width / m - 1) / ((width + 1) / m)  # = (D - M) / (D + 1)
  assert orthogonal / gaussian == pytest.approx(expected, rel=0.2), (orthogonal, gaussian)


def test_block_credit_and_an_embedding_only_correction(spec, params, batch):
  """block_credit=delta_L gives the blocks identity's credit; a correction at the embedding
  touches a_0 alone (with D orthogonal directions it makes a_0 the exact g_0)."""
  x, y, hs, g, _ = _setup(spec, params, batch)
  c = config_defaults.base_config().credit
  c.update(dict(block_credit="delta_L", correction="forward_gradient", correction_M=spec.width,
                correction_directions="orthogonal", correction_layers="embedding"))
  est = estimators.make("oracle", spec, c)
  acts = est.activations(params, x, y)
  a = jax.jit(est.credit)({}, params, acts, jax.random.PRNGKey(0))
  np.testing.assert_allclose(a[0], g[0], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(a[1:], jnp.broadcast_to(g[-1], a[1:].shape), rtol=1e-6, atol=1e-8)
  c.update(dict(correction="none"))
  zero = estimators.make("zero", spec, c)
  a = jax.jit(zero.credit)({}, params, acts, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(a[0], 0.0)
  np.testing.assert_allclose(a[1:], jnp.broadcast_to(g[-1], a[1:].shape), rtol=1e-6, atol=1e-8)


def test_every_option_keeps_a_L_and_is_applied_by_make(spec, params, batch):
  x, y, hs, g, _ = _setup(spec, params, batch)
  c = config_defaults.base_config().credit
  c.update(dict(radial="remove", size="projected", correction="forward_gradient"))
  est = estimators.make("identity", spec, c)
  acts = est.activations(params, x, y)
  a = jax.jit(est.credit)({}, params, acts, jax.random.PRNGKey(0))
  np.testing.assert_allclose(a[-1], g[-1], rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(options.radial_fraction(a[:-1], hs[:-1]), 0.0, atol=1e-5)


def test_credit_matmul_precision_reaches_every_estimator_matmul_but_the_controls(spec, params,
                                                                                batch):
  """credit.matmul_precision=tensorfloat32 lowers the field's loss and credit (its net, its
  jvp targets) with HIGH-precision dots where the run's HIGHEST stands otherwise; the oracle
  keeps the run's."""
  x, y = batch
  c = config_defaults.base_config().credit
  c.update(dict(matmul_precision="tensorfloat32", targets="jvp"))
  def dots(name, fn_name):
    est = estimators.make(name, spec, c)
    acts = est.activations(params, x, y)
    phi = est.init(jax.random.PRNGKey(0), params, acts)
    fn = {"credit": lambda: jax.jit(est.credit).lower(phi, params, acts, jax.random.PRNGKey(1)),
          "loss": lambda: jax.jit(est.loss).lower(phi, phi, params, acts,
                                                  jax.random.PRNGKey(1))}[fn_name]
    with jax.default_matmul_precision("highest"):
      text = fn().as_text()
    return set(re.findall(r"dot_general.*precision = \[(\w+), \w+\]", text))
  assert dots("vector_field", "loss") == {"HIGH"}
  assert dots("vector_field", "credit") == {"HIGH"}
  assert dots("oracle", "credit") == {"HIGHEST"}


def test_fa_with_the_transposed_weights_is_backprop(spec, params, batch):
  x, y, _, g, _ = _setup(spec, params, batch)
  transposed = {"b1": jnp.swapaxes(params["blocks"]["w1"], 1, 2),
                "b2": jnp.swapaxes(params["blocks"]["w2"], 1, 2)}
  acts = student_lib.activations(spec, params, x, y)
  np.testing.assert_allclose(jax.jit(feedback.feedback_credit, static_argnums=0)(
      spec, params, acts, transposed), g,
                             rtol=1e-4, atol=1e-7)
  fa = estimators.make("fa", spec, config_defaults.base_config().credit)
  a = jax.jit(fa.credit)(fa.init(jax.random.PRNGKey(0), params, acts), params, acts, None)
  np.testing.assert_allclose(a[-1], g[-1], rtol=1e-6, atol=1e-8)
  assert float(jnp.abs(a[0] - g[0]).max()) > 1e-3 * float(jnp.abs(g[0]).max())  # random B


def test_grid_correlation_finds_the_diagnostic_that_orders_the_runs():
  rows = []
  for point, (accuracy, gamma) in enumerate([(0.2, 0.9), (0.5, 0.5), (0.6, 0.4), (0.9, 0.1)]):
    for seed in range(3):
      rows.append(dict(credit=f"c{point}", rule="inner_product", seed=seed, steps=10,
                       test_accuracy=accuracy + 0.01 * seed, gamma=gamma,
                       update_alignment=accuracy, update_alignment_embed=0.0,
                       norm_ratio=1.0 + point, radial_fraction_abs=0.1))
  # A single-seed probe beside the 3-seed grid is left out, not the grid cut to one seed.
  rows.append(dict(rows[0], credit="probe", test_accuracy=0.99, gamma=0.99))
  by = {c["predictor"]: c for c in local_train_study.predictor_correlations(rows)}
  assert by["update_alignment"]["spearman"] == pytest.approx(1.0)
  assert by["gamma"]["spearman"] == pytest.approx(-1.0)
  assert by["log_norm_ratio_distance"]["spearman"] == pytest.approx(1.0)
  assert by["gamma"]["num_points"] == 4 and by["gamma"]["num_seeds"] == 3
