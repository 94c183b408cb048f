"""Estimators that need no training: oracle, dfa, identity, forward_gradient."""
import jax
import jax.numpy as jnp

from creditfield import perturb
from creditfield import student as student_lib
from creditfield.estimators import base


def oracle(spec: student_lib.StudentSpec) -> base.CreditEstimator:
  """Exact g_l by reverse-mode AD through the hidden blocks; the reference."""
  spec = spec.with_guard(False)

  def credit(phi, student_params, acts, key):
    del phi, key
    return student_lib.oracle_grads(spec, student_params, acts.x, acts.y)

  return base.CreditEstimator("oracle", spec, base.no_params, credit)


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
