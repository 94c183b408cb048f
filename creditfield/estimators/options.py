"""Credit options that apply to every credit, after the estimator's own credit (issue 26).

Both act on the hidden layers l < L only; a_L = delta_L is left as the estimator gives it.

  radial   keep | remove    remove: a_l <- a_l - <a_l, h^_l> h^_l,  h^_l = unit(h_l - mean_d h_l)
                            per sample. Every LayerNorm downstream is blind to that direction,
                            so a step of h_l along it only grows ||h|| (pre-LN blocks then tend
                            to the identity); exact gradients have almost none of it.
  size     own | projected  projected: a_l <- (D_u l(h_l)) u_l with u_l = a_l / ||a_l||: the
                            credit's direction, its size and sign from one exact forward-mode
                            directional derivative per layer (the projection of the true
                            gradient on the guess, Fournier et al. 2023). Forward mode only,
                            so legal under the no-hidden-BP guard.
Removal comes first, so `projected` sizes the direction that is kept.
"""
import jax
import jax.numpy as jnp

from creditfield import credit_net
from creditfield import student as student_lib
from creditfield.estimators import base

RADIAL = ("keep", "remove")
SIZES = ("own", "projected")


def remove_radial(credit_SxBxD, hs_SxBxD) -> jax.Array:
  """The credit less its component along each sample's centred residual stream."""
  h_unit = credit_net.unit(hs_SxBxD - hs_SxBxD.mean(-1, keepdims=True))
  return credit_SxBxD - jnp.sum(credit_SxBxD * h_unit, -1, keepdims=True) * h_unit


def radial_fraction(credit_SxBxD, hs_SxBxD) -> jax.Array:
  """<a_l, h^_l> / ||a_l|| per layer and sample, (S, B); 0 where a_l = 0."""
  h_unit = credit_net.unit(hs_SxBxD - hs_SxBxD.mean(-1, keepdims=True))
  return jnp.sum(credit_net.unit(credit_SxBxD) * h_unit, -1)


def projected_size(spec, student_params, hs_SxBxD, y, credit_SxBxD) -> jax.Array:
  """(D_u l(h_l)) u_l with u_l the unit credit, by one jvp from every layer l < S."""
  u = credit_net.unit(credit_SxBxD)
  losses_from = lambda hs: student_lib.losses_from_layers(spec, student_params, hs, y)
  slope_SxB = jax.jvp(losses_from, (hs_SxBxD,), (u,))[1]
  return slope_SxB[..., None] * u


def with_options(estimator: base.CreditEstimator, radial: str = "keep",
                 size: str = "own") -> base.CreditEstimator:
  """`estimator` whose credit at the hidden layers is post-processed by the options."""
  if radial not in RADIAL or size not in SIZES:
    raise ValueError(f"radial={radial!r}, size={size!r}; expected {RADIAL} and {SIZES}.")
  if radial == "keep" and size == "own":
    return estimator
  own_credit = estimator.credit

  def credit(phi, student_params, acts, key):
    a = own_credit(phi, student_params, acts, key)
    hidden, hs = a[:-1], acts.hs[:-1]
    if radial == "remove":
      hidden = remove_radial(hidden, hs)
    if size == "projected":
      hidden = projected_size(estimator.spec, student_params, hs, acts.y, hidden)
    return a.at[:-1].set(hidden)

  return estimator._replace(credit=credit)
