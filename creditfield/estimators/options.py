"""Credit options that apply to every credit, after the estimator's own credit (issue 26).

All act on the hidden layers l < L only; a_L = delta_L is left as the estimator gives it.

  correction  none | forward_gradient
                            forward_gradient: a_l <- a_l + (1/M) sum_v (D_v l(h_l) - <a_l, v>) v
                            over M fresh Gaussian directions per sample (exact jvp): the credit
                            as a control variate of a forward gradient, unbiased (E = g_l) and
                            as noisy as ||g_l - a_l||, not ||g_l||.
  radial   keep | remove | remove_with_mean
                            remove: a_l <- a_l - <a_l, h^_l> h^_l,  h^_l = unit(h_l - mean_d h_l)
                            per sample. Every LayerNorm downstream is blind to that direction,
                            so a step of h_l along it only grows ||h|| (pre-LN blocks then tend
                            to the identity); exact gradients have almost none of it.
                            remove_with_mean: also the mean over features, LayerNorm's other
                            blind direction (exact gradients have none of it: every term of
                            g_l comes through a LayerNorm or is delta_L, which does).
  size     own | projected  projected: a_l <- (D_u l(h_l)) u_l with u_l = a_l / ||a_l||: the
                            credit's direction, its size and sign from one exact forward-mode
                            directional derivative per layer (the projection of the true
                            gradient on the guess, Fournier et al. 2023). Forward mode only,
                            so legal under the no-hidden-BP guard.
The correction comes first, then removal, so `projected` sizes the direction that is kept.
"""
import jax
import jax.numpy as jnp

from creditfield import perturb
from creditfield import rng
from creditfield import student as student_lib
from creditfield.estimators import base

RADIAL = ("keep", "remove", "remove_with_mean")
SIZES = ("own", "projected")
CORRECTIONS = ("none", "forward_gradient")


def remove_radial(credit_SxBxD, hs_SxBxD, with_mean: bool = False) -> jax.Array:
  """The credit less its component along each sample's centred residual stream (and, with
  `with_mean`, less its mean over features: the two directions LayerNorm cannot see)."""
  h_unit = student_lib.unit(hs_SxBxD - hs_SxBxD.mean(-1, keepdims=True))
  if with_mean:  # h_unit is centred, so the two removals commute
    credit_SxBxD = credit_SxBxD - credit_SxBxD.mean(-1, keepdims=True)
  return credit_SxBxD - jnp.sum(credit_SxBxD * h_unit, -1, keepdims=True) * h_unit


def radial_fraction(credit_SxBxD, hs_SxBxD) -> jax.Array:
  """<a_l, h^_l> / ||a_l|| per layer and sample, (S, B); 0 where a_l = 0."""
  h_unit = student_lib.unit(hs_SxBxD - hs_SxBxD.mean(-1, keepdims=True))
  return jnp.sum(student_lib.unit(credit_SxBxD) * h_unit, -1)


def mean_fraction(credit_SxBxD) -> jax.Array:
  """<a_l, 1/sqrt(D)> / ||a_l|| per layer and sample, (S, B): the credit along the mean."""
  width = credit_SxBxD.shape[-1]
  return jnp.sum(student_lib.unit(credit_SxBxD), -1) / jnp.sqrt(width)


def forward_gradient_correction(spec, student_params, hs_SxBxD, y, credit_SxBxD, key,
                                num_directions: int) -> jax.Array:
  """a + (1/M) sum_v (D_v l - <a, v>) v, an unbiased estimate of g with `a` as control variate."""
  v = perturb.sample_directions(key, (num_directions,) + hs_SxBxD.shape)
  d_MxSxB = perturb.directional_derivatives(spec, student_params, hs_SxBxD, y, v, "jvp")
  residual_MxSxB = d_MxSxB - jnp.einsum("sbd,msbd->msb", credit_SxBxD, v)
  return credit_SxBxD + jnp.einsum("msb,msbd->sbd", residual_MxSxB, v) / num_directions


def projected_size(spec, student_params, hs_SxBxD, y, credit_SxBxD) -> jax.Array:
  """(D_u l(h_l)) u_l with u_l the unit credit, by one jvp from every layer l < S."""
  u = student_lib.unit(credit_SxBxD)
  losses_from = lambda hs: student_lib.losses_from_layers(spec, student_params, hs, y)
  slope_SxB = jax.jvp(losses_from, (hs_SxBxD,), (u,))[1]
  return slope_SxB[..., None] * u


def with_options(estimator: base.CreditEstimator, radial: str = "keep", size: str = "own",
                 correction: str = "none", num_directions: int = 1) -> base.CreditEstimator:
  """`estimator` whose credit at the hidden layers is post-processed by the options
  (`num_directions`: the M of the correction)."""
  if radial not in RADIAL or size not in SIZES or correction not in CORRECTIONS:
    raise ValueError(f"radial={radial!r}, size={size!r}, correction={correction!r}; expected "
                     f"{RADIAL}, {SIZES} and {CORRECTIONS}.")
  if radial == "keep" and size == "own" and correction == "none":
    return estimator
  own_credit = estimator.credit

  def credit(phi, student_params, acts, key):
    corrected = correction == "forward_gradient"
    # With a correction the key becomes a parent of two named leaves (rng.py); without one the
    # estimator gets its key as it would alone, so its numbers do not change.
    k_credit, k_correction = rng.leaves(key, "credit", "correction") if corrected else (key, None)
    a = own_credit(phi, student_params, acts, k_credit)
    hidden, hs = a[:-1], acts.hs[:-1]
    if corrected:
      hidden = forward_gradient_correction(estimator.spec, student_params, hs, acts.y, hidden,
                                           k_correction, num_directions)
    if radial != "keep":
      hidden = remove_radial(hidden, hs, with_mean=radial == "remove_with_mean")
    if size == "projected":
      hidden = projected_size(estimator.spec, student_params, hs, acts.y, hidden)
    return a.at[:-1].set(hidden)

  return estimator._replace(credit=credit)
