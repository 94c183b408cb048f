"""The no-hidden-BP guard (guard.py): a tripwire for autodiff routes through hidden blocks.

What it catches: every reverse-mode autodiff route through a hidden block, through its input
or its parameters, in code traced inside `guard.enforced()` (every credit that is not a
backprop control, as `estimators.make` builds it). What it cannot catch: a hand-written
backward pass (transposed weights applied by hand); code review must. Each probe below is
first shown to be a real route (outside the guard it gives the oracle's gradient), then shown
to raise `HiddenBackpropError` inside it; forward-mode routes run and agree with the unguarded
values; every non-backprop estimator still trains and gives finite credit.
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
from creditfield.estimators import base


def _credit_config():
  c = config_defaults.base_config().credit
  c.M = 2
  c.vector_field.hidden = (16,)
  c.scalar_bridge.hidden = (16,)
  c.dni.hidden = (16,)
  return c


def _train_config():
  return ml_collections.ConfigDict(dict(
      steps=3, batch_size=8, lr=1e-3, schedule="constant", warmup_steps=0, ema_decay=0.9,
      grad_clip=1.0, log_every=3, credit_params="ema", augment="none"))


def _loss_from_h0(spec, params, y):
  return lambda h: student_lib.forward_from(spec, params, h, 0, y).sum()


def _per_sample_parameter_route(spec, params, hs, y):
  """Exact backprop from parameter vjps only: block l's per-sample ln_bias cotangent is the
  cotangent of its LayerNorm's output; chained with LN's vjp and the skip connection."""
  residual = student_lib.residual_fn(spec)
  a = student_lib.delta_L(spec, params, hs[-1], y)
  for l in reversed(range(spec.depth)):
    p = jax.tree.map(lambda v, l=l: v[l], params["blocks"])
    bias = jnp.broadcast_to(p["ln_bias"], hs[l].shape)
    _, vjp = jax.vjp(lambda b, p=p, l=l: residual(dict(p, ln_bias=b), hs[l]), bias)
    d_ln_out = vjp(a)[0]
    _, ln_vjp = jax.vjp(student_lib.layer_norm, hs[l])
    a = a + ln_vjp(d_ln_out * p["ln_scale"])[0]
  return a


def _custom_vjp_route(spec, params, y):
  """A custom_vjp whose backward runs the student's forward under autodiff."""
  f = _loss_from_h0(spec, params, y)

  @jax.custom_vjp
  def probe(h):
    return h

  probe.defvjp(lambda h: (h, h), lambda h, ct: (jax.grad(f)(h),))
  return lambda h: jax.grad(lambda h: jnp.sum(probe(h)))(h)


def _reverse_routes(spec, params, hs, y):
  """name -> a function of h_0 that returns g_0 by a reverse-mode route."""
  f = _loss_from_h0(spec, params, y)
  ones = jnp.ones(())
  jvp_of = lambda h: lambda t: jax.jvp(f, (h,), (t,))[1]
  return {
      "grad": jax.grad(f),
      "vjp": lambda h: jax.vjp(f, h)[1](ones)[0],
      "linear_transpose(jvp)": lambda h: jax.linear_transpose(jvp_of(h), h)(ones)[0],
      "linearize + transpose": lambda h: jax.linear_transpose(jax.linearize(f, h)[1], h)(ones)[0],
      # d/dh of the directional derivative along v is a Hessian-vector product, not g_0:
      # its oracle value is computed unguarded below.
      "vjp(jvp)": lambda h: jax.vjp(lambda x: jvp_of(x)(jnp.ones_like(x)), h)[1](ones)[0],
      "per-sample parameter vjps": lambda h: _per_sample_parameter_route(spec, params, hs, y),
      "custom_vjp backward": _custom_vjp_route(spec, params, y),
  }


@pytest.mark.parametrize("route", list(_reverse_routes(None, None, None, None)))
def test_hidden_bp_guard_refuses_every_reverse_mode_route_inside_credit_code(
    spec, params, batch, route):
  x, y = batch
  hs, _ = student_lib.forward(spec, params, x)
  exact = student_lib.oracle_grads(spec, params, x, y)[0]
  if route == "vjp(jvp)":
    f = _loss_from_h0(spec, params, y)
    exact = jax.grad(lambda h: jax.jvp(f, (h,), (jnp.ones_like(h),))[1])(hs[0])
  # A real route: unguarded it is the oracle's (exact) answer.
  got = jax.jit(_reverse_routes(spec, params, hs, y)[route])(hs[0])
  np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-6)
  # Inside credit code it raises the guard's own error, even with an unguarded spec.
  with guard.enforced():
    with pytest.raises(guard.HiddenBackpropError, match="no-hidden-BP guard"):
      jax.jit(_reverse_routes(spec, params, hs, y)[route])(hs[0])


def test_hidden_bp_guard_cannot_be_turned_off_from_inside_an_estimators_credit(
    spec, params, batch):
  x, y = batch

  def credit(phi, student_params, acts, key):
    del phi, key
    return student_lib.oracle_grads(spec.with_guard(False), student_params, acts.x, acts.y)

  sneaky = estimators.guarded_view(
      base.CreditEstimator("sneaky", spec.with_guard(True), base.no_params, credit))
  acts = sneaky.activations(params, x, y)
  with pytest.raises(guard.HiddenBackpropError, match="through its input"):
    sneaky.credit({}, params, acts, jax.random.PRNGKey(0))


def test_hidden_bp_guard_allows_every_forward_mode_route_and_is_exact(spec, params, batch):
  x, y = batch
  hs, _ = student_lib.forward(spec, params, x)
  v = jax.random.normal(jax.random.PRNGKey(4), hs[0].shape)
  w = jax.random.normal(jax.random.PRNGKey(5), hs[0].shape)
  f = _loss_from_h0(spec, params, y)
  routes = {
      "jvp": lambda: jax.jvp(f, (hs[0],), (v,)),
      "jvp(jvp)": lambda: jax.jvp(lambda h: jax.jvp(f, (h,), (v,))[1], (hs[0],), (w,)),
      "linearize": lambda: jax.linearize(f, hs[0])[1](v),
      "jacfwd": lambda: jax.jacfwd(lambda h0: f(hs[0].at[0].set(h0)))(hs[0][0]),
  }
  for name, route in routes.items():
    plain = route()
    with guard.enforced():
      guarded = jax.jit(route)()
    for a, b in zip(jax.tree.leaves(guarded), jax.tree.leaves(plain)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)


def test_hidden_bp_guard_keeps_the_rules_one_legal_reverse_pass(spec, params, batch):
  """Outside credit code a block differentiates its own parameters (input under
  stop-gradient), and the input route stays closed for a guarded spec."""
  x, y = batch
  hs, _ = student_lib.forward(spec, params, x)
  block0 = jax.tree.map(lambda p: p[0], params["blocks"])
  local = lambda s: jax.grad(lambda bp: student_lib.residual_fn(s)(
      bp, jax.lax.stop_gradient(hs[0])).sum())(block0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               local(spec.with_guard(True)), local(spec))
  with pytest.raises(guard.HiddenBackpropError, match="through its input"):
    jax.grad(_loss_from_h0(spec.with_guard(True), params, y))(hs[0])
  with guard.enforced(), pytest.raises(guard.HiddenBackpropError, match="its parameters"):
    local(spec)


@pytest.mark.study
@pytest.mark.parametrize("name", [n for n in estimators.NAMES if n not in estimators.BACKPROP])
@pytest.mark.parametrize("targets", ["fd", "jvp"])
def test_hidden_bp_guard_non_backprop_estimators_train_and_give_finite_credit(
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


@pytest.mark.study
@pytest.mark.parametrize("options", [
    dict(vector_field=dict(contrastive=0.1, smoothness=0.1)),
    dict(vector_field=dict(regression="forward_gradient", residual=True)),
    dict(radial="remove", size="projected")])
def test_hidden_bp_guard_vector_field_options_train_under_the_guard(spec, params, batch, options):
  """The contrastive term differentiates the EMA value net's input, never the student; the
  projected size is forward mode."""
  x, y = batch
  cfg = _credit_config()
  cfg.update(options)
  est = estimators.make("vector_field", spec, cfg)
  phi = estimator_training.train(est, params, x, y, _train_config(), jax.random.PRNGKey(1))
  credit = jax.jit(est.credit)(phi, params, est.activations(params, x, y), jax.random.PRNGKey(2))
  assert bool(jnp.all(jnp.isfinite(credit)))


def test_hidden_bp_guard_makes_the_oracle_raise(spec, params, batch):
  x, y = batch
  with pytest.raises(guard.HiddenBackpropError, match="no-hidden-BP guard"):
    student_lib.oracle_grads(spec.with_guard(True), params, x, y)
  with pytest.raises(guard.HiddenBackpropError):
    jax.jit(jax.grad(lambda p: student_lib.mean_loss(spec.with_guard(True), p, x, y)))(params)
