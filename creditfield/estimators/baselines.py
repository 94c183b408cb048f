"""Estimators that need no training: oracle, oracle_dial, dfa, identity, forward_gradient, zero."""
import jax
import jax.numpy as jnp

from creditfield import perturb
from creditfield import student as student_lib
from creditfield.estimators import base
from creditfield.infra import errors


def oracle(spec: student_lib.StudentSpec) -> base.CreditEstimator:
  """Exact g_l by reverse-mode AD through the hidden blocks; the reference."""
  spec = spec.with_guard(False)

  def credit(phi, student_params, acts, key):
    del phi, key
    return student_lib.oracle_grads(spec, student_params, acts.x, acts.y)

  return base.CreditEstimator("oracle", spec, base.no_params, credit)


def dial_params(gamma: float) -> dict:
  """The parameters of `oracle_dial`: its cosine to the true gradient, in [0, 1]."""
  if not 0.0 <= gamma <= 1.0:
    raise errors.UserError(f"oracle_dial needs a cosine gamma in [0, 1], got {gamma} "
                     "(config.phase6.dial_gammas).")
  return {"gamma": jnp.asarray(gamma, jnp.float32)}


def oracle_dial(spec: student_lib.StudentSpec) -> base.CreditEstimator:
  """A control built from the oracle: a_l = ||g_l|| (gamma g^_l + sqrt(1 - gamma^2) u^_l),
  u^ a random unit vector orthogonal to g_l, fresh for every call's key.

  Its per-sample cosine to g_l is exactly gamma and its norm exactly ||g_l|| at every hidden
  layer l < L (a_L = delta_L, exact), so Phase 6 can map
  loss change against credit quality with nothing else changing. gamma lives in the
  parameters (`dial_params`), so one compiled program serves every point of the dial.
  """
  spec = spec.with_guard(False)

  def init(key, student_params, acts):
    del key, student_params, acts
    return dial_params(1.0)

  def credit(phi, student_params, acts, key):
    g = student_lib.oracle_grads(spec, student_params, acts.x, acts.y)
    norm = jnp.linalg.norm(g, axis=-1, keepdims=True)
    g_unit = g / jnp.maximum(norm, 1e-30)
    u = jax.random.normal(key, g.shape)
    u = u - jnp.sum(u * g_unit, -1, keepdims=True) * g_unit
    u_unit = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    gamma = phi["gamma"]
    dialled = norm * (gamma * g_unit + jnp.sqrt(1.0 - jnp.square(gamma)) * u_unit)
    # a_L = delta_L exact, as every other credit has it: the dial and the credits it is
    # compared with differ only at the hidden layers (block L-1 consumes a_L).
    return dialled.at[-1].set(g[-1])

  return base.CreditEstimator("oracle_dial", spec, init, credit)


def dfa(spec: student_lib.StudentSpec) -> base.CreditEstimator:
  """a_l = B_l e with fixed random B_l in R^{D x C}, entries N(0, 1/D), drawn by `init`."""
  spec = spec.with_guard(True)

  def init(key, student_params, acts):
    del student_params, acts
    shape = (spec.depth + 1, spec.num_outputs, spec.width)
    return {"feedback": jax.random.normal(key, shape) / jnp.sqrt(spec.width)}

  def credit(phi, student_params, acts, key):
    del student_params, key
    return jnp.einsum("bc,lcd->lbd", acts.error, phi["feedback"])

  return base.CreditEstimator("dfa", spec, init, credit)


def identity(spec: student_lib.StudentSpec) -> base.CreditEstimator:
  """a_l = delta_L at every layer: exact if every block were zero."""
  spec = spec.with_guard(True)

  def credit(phi, student_params, acts, key):
    del phi, student_params, key
    return jnp.broadcast_to(acts.delta_L, acts.hs.shape)

  return base.CreditEstimator("identity", spec, base.no_params, credit)


def zero(spec: student_lib.StudentSpec) -> base.CreditEstimator:
  """a_l = 0: under every local rule only the head learns. Phase 6's control."""
  spec = spec.with_guard(True)

  def credit(phi, student_params, acts, key):
    del phi, student_params, key
    return jnp.zeros_like(acts.hs)

  return base.CreditEstimator("zero", spec, base.no_params, credit)


def forward_gradient(spec: student_lib.StudentSpec, num_directions: int,
                     directions: str = "gaussian", method: str = "jvp",
                     eps: float = 1e-2) -> base.CreditEstimator:
  """a_l = (1/M) sum_v D_v l(h_l) v over M directions per sample and layer.

  Unbiased for E[v v^T] = I (exactly so with `method="jvp"`).
  """
  spec = spec.with_guard(True)

  def credit(phi, student_params, acts, key):
    del phi
    v = perturb.sample_directions(key, (num_directions,) + acts.hs.shape, directions)
    d_MxSxB = perturb.directional_derivatives(
        spec, student_params, acts.hs, acts.y, v, method, eps)
    return jnp.einsum("msb,msbd->sbd", d_MxSxB, v) / num_directions

  return base.CreditEstimator("forward_gradient", spec, base.no_params, credit)
