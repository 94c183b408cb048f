"""Properties of the training-free estimators, measured with the diagnostics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from creditfield import diagnostics
from creditfield import estimators
from creditfield import student as student_lib


def _credit(est, params, x, y, key=jax.random.PRNGKey(3)):
  acts = est.activations(params, x, y)
  phi = est.init(key, params, acts)
  return jax.jit(est.credit)(phi, params, acts, key), acts


def _quality(spec, params, x, y, credit, sigma=1e-3):
  @jax.jit
  def quality(params, x, y, credit):
    oracle = student_lib.oracle_grads(spec, params, x, y)
    acts = student_lib.activations(spec, params, x, y)
    return diagnostics.credit_quality(spec, params, acts, credit, oracle, jax.random.PRNGKey(9),
                                      num_directions=16, sigma=sigma, nudge_eps=1e-3)
  return quality(params, x, y, credit)


def test_oracle_has_gamma_one_nudge_one_and_rho_near_one(spec, params, batch):
  x, y = batch
  credit, _ = _credit(estimators.oracle(spec), params, x, y)
  q = _quality(spec, params, x, y, credit, sigma=1e-3)
  np.testing.assert_allclose(q["gamma"], 1.0, atol=1e-5)
  np.testing.assert_allclose(q["nudge"], 1.0, atol=1e-5)
  assert np.all(q["rho"] > 0.99), q["rho"]


def test_forward_gradient_is_unbiased_and_noisier_with_fewer_directions(spec, params, batch):
  x, y = batch
  oracle = student_lib.oracle_grads(spec, params, x, y)
  many, _ = _credit(estimators.forward_gradient(spec, 4096), params, x, y)
  cos = jnp.sum(many * oracle, -1) / (jnp.linalg.norm(many, axis=-1) *
                                      jnp.linalg.norm(oracle, axis=-1))
  assert float(cos.min()) > 0.99, cos.min()
  gammas = []
  for m in (1, 8, 64):
    credit, _ = _credit(estimators.forward_gradient(spec, m), params, x, y)
    gammas.append(float(diagnostics.gamma(credit, oracle).mean()))
  assert gammas[0] < gammas[1] < gammas[2], gammas


def test_identity_is_exact_when_block_outputs_are_zero(spec, params, batch):
  x, y = batch
  blocks = dict(params["blocks"], w2=jnp.zeros_like(params["blocks"]["w2"]),
                b2=jnp.zeros_like(params["blocks"]["b2"]))
  zeroed = dict(params, blocks=blocks)
  credit, _ = _credit(estimators.identity(spec), zeroed, x, y)
  np.testing.assert_allclose(credit, student_lib.oracle_grads(spec, zeroed, x, y),
                             rtol=1e-5, atol=1e-7)
  # ... and is not exact for the random network, where the blocks are not zero.
  credit, _ = _credit(estimators.identity(spec), params, x, y)
  assert float(diagnostics.gamma(credit, student_lib.oracle_grads(spec, params, x, y))[0]) < 0.999


def test_dfa_is_not_aligned_on_an_untrained_network():
  spec = student_lib.StudentSpec(in_dim=16, width=64, depth=3, num_outputs=10)
  params = student_lib.init_params(spec, jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (256, 16))
  y = jnp.arange(256) % 10
  credit, _ = _credit(estimators.dfa(spec), params, x, y)
  gamma = diagnostics.gamma(credit, student_lib.oracle_grads(spec, params, x, y))
  assert float(jnp.abs(gamma).max()) < 0.15, gamma


def test_unknown_estimator_name_lists_the_valid_names():
  import pytest
  with pytest.raises(ValueError, match="valid names are oracle, dfa"):
    estimators.parse_names("oracle,nonsense")


def test_fd_targets_from_the_forward_loss_equal_recomputed_ones(spec, params, batch):
  # vector_field passes the forward pass's loss as the fd base instead of a second
  # pass: the loss from every layer of one forward pass is that same loss.
  from creditfield import perturb  # pylint: disable=g-import-not-at-top
  x, y = batch
  acts = student_lib.activations(spec, params, x, y)
  v = jax.random.normal(jax.random.PRNGKey(4), (3,) + acts.hs.shape)
  recomputed = perturb.directional_derivatives(spec, params, acts.hs, y, v, "fd", 1e-2)
  reused = perturb.directional_derivatives(spec, params, acts.hs, y, v, "fd", 1e-2,
                                           base_B=acts.loss)
  np.testing.assert_allclose(reused, recomputed, rtol=1e-3, atol=1e-4)


def test_oracle_dial_has_cosine_gamma_and_the_true_norm_per_sample(spec, params, batch):
  """The dial control: per sample and hidden layer, cos(a, g) = gamma exactly and ||a|| = ||g||;
  a_L = delta_L exact; a new key gives a new random part (fresh per step), gamma = 1 gives the
  oracle itself."""
  x, y = batch
  est = estimators.oracle_dial(spec)
  est = est._replace(credit=jax.jit(est.credit))
  acts = est.activations(params, x, y)
  g = student_lib.oracle_grads(spec, params, x, y)
  norm = lambda v: jnp.linalg.norm(v, axis=-1)
  for gamma in (0.0, 0.3, 0.8, 1.0):
    a = est.credit(estimators.dial_params(gamma), params, acts, jax.random.PRNGKey(4))
    cos = jnp.sum(a * g, -1) / (norm(a) * norm(g))
    np.testing.assert_allclose(cos[:-1], gamma, atol=1e-5)
    np.testing.assert_allclose(norm(a), norm(g), rtol=1e-5)
    # a_L = delta_L exact, as every other credit has it.
    np.testing.assert_allclose(a[-1], g[-1], rtol=1e-5, atol=1e-7)
  a1, a2 = (est.credit(estimators.dial_params(0.3), params, acts, jax.random.PRNGKey(k))
            for k in (4, 5))
  assert float(jnp.abs(a1 - a2).max()) > 1e-3 * float(norm(g).max())
  np.testing.assert_allclose(est.credit(estimators.dial_params(1.0), params, acts,
                                        jax.random.PRNGKey(4)), g, rtol=1e-5, atol=1e-7)
  assert not est.spec.guarded and "oracle_dial" in estimators.BACKPROP


def test_oracle_dial_refuses_a_cosine_outside_zero_one():
  with pytest.raises(ValueError, match="dial_gammas"):
    estimators.dial_params(1.5)


def test_credit_scale_is_each_samples_delta_L_norm_floored_by_the_batch():
  """Targets are in units of ||delta_L|| per sample; the floor (a fraction of the batch's RMS,
  never below 1e-6 of it) keeps a sample whose delta_L is exactly 0 finite."""
  from creditfield import credit_net  # pylint: disable=g-import-not-at-top
  d = jnp.array([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4]])
  rms = float(jnp.sqrt((25.0 + 0.0 + 0.25) / 3))
  np.testing.assert_allclose(credit_net.credit_scale("delta_L", d, 0.0)[:, 0],
                             [5.0, 1e-6 * rms, 0.5], rtol=1e-5)
  np.testing.assert_allclose(credit_net.credit_scale("delta_L", d, 0.1)[:, 0],
                             [5.0, 0.1 * rms, 0.5], rtol=1e-5)
  np.testing.assert_array_equal(credit_net.credit_scale("none", d, 0.1), jnp.ones((3, 1)))


def test_learned_layer_embedding_interpolates_its_table_between_layers():
  """At t = l/L the net sees table row l alone; at the midpoint of layers l and l+1, their
  mean (smoothness evaluates there)."""
  from creditfield import credit_net  # pylint: disable=g-import-not-at-top
  depth = 3
  net = credit_net.CreditNet(hidden=(8,), out_dim=2, depth=depth)
  h, s = jax.random.normal(jax.random.PRNGKey(0), (4, 5)), jnp.ones((4, 2))
  phi = net.init(jax.random.PRNGKey(1), h, jnp.zeros(4), s)
  table = phi["params"]["layer_embedding"]

  def out(rows, t):
    with_rows = {"params": dict(phi["params"], layer_embedding=rows)}
    return net.apply(with_rows, h, jnp.full((4,), t), s)

  for layer in range(depth):
    np.testing.assert_allclose(out(table, layer / depth),
                               out(jnp.broadcast_to(table[layer], table.shape), layer / depth),
                               atol=1e-6)
    mean = (table[layer] + table[layer + 1]) / 2
    np.testing.assert_allclose(out(table, (layer + 0.5) / depth),
                               out(jnp.broadcast_to(mean, table.shape), (layer + 0.5) / depth),
                               atol=1e-6)


@pytest.mark.parametrize("name", ["vector_field", "scalar_bridge", "dni"])
def test_learned_credit_training_gradient_has_no_scatter_add_whose_indices_collide(
    name, spec, params, batch):
  """A scatter-add whose indices may repeat (a gather's gradient) sums on a GPU in no fixed
  order: with one in the layer embedding, two H200 runs of the scalar bridge differed by 0.011
  in Gamma (docs/benchmarks/h200_2026-12-03e.md). Scatters at distinct indices are exact."""
  from creditfield import config_defaults  # pylint: disable=g-import-not-at-top
  est = estimators.make(name, spec, config_defaults.base_config().credit)
  acts = student_lib.activations(spec, params, *batch)
  phi = est.init(jax.random.PRNGKey(2), params, acts)
  loss = lambda p: est.loss(p, phi, params, acts, jax.random.PRNGKey(3))[0]
  program = jax.jit(jax.grad(loss)).lower(phi).as_text()
  scatters = [line for line in program.splitlines() if "stablehlo.scatter" in line]
  assert all("unique_indices = true" in line for line in scatters), scatters
