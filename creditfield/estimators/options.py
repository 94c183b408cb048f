"""Credit options that apply to every credit, after the estimator's own credit (issue 26).

All act on the hidden layers l < L only (a_L is left as the estimator gives it, delta_L for
every credit but zero), except block_credit, which sets every credit the blocks consume.

  correction  none | forward_gradient
                            forward_gradient: a_l <- a_l + (1/M) sum_v (D_v l(h_l) - <a_l, v>) v
                            over M fresh directions per sample (exact jvp; `correction_M`,
                            0 = the credit's M; `correction_directions`): the credit as a
                            control variate of a forward gradient, unbiased (E = g_l) and as
                            noisy as ||g_l - a_l||, not ||g_l||. `correction_layers`: hidden
                            (every l < L) | embedding (a_0 only: M passes through the L blocks,
                            against M L (L+1)/2 for every layer).
  block_credit  own | delta_L
                            delta_L: the blocks' credits a_1..a_L are delta_L (identity's) and
                            only a_0, the embedding's, is the estimator's (with its options).
The order: block credit, correction, removal, size (so `projected` sizes the direction kept).
"""
import dataclasses

import jax
import jax.numpy as jnp

from creditfield import perturb
from creditfield import rng
from creditfield import student as student_lib
from creditfield.estimators import base

RADIAL = ("keep", "remove", "remove_with_mean")
SIZES = ("own", "projected")
CORRECTIONS = ("none", "forward_gradient")
CORRECTION_LAYERS = ("hidden", "embedding")
BLOCK_CREDITS = ("own", "delta_L")


@dataclasses.dataclass(frozen=True)
class CreditOptions:
  """What `with_options` does to a credit (the module docstring); the defaults do nothing."""
  radial: str = "keep"
  size: str = "own"
  correction: str = "none"
  correction_M: int = 1
  correction_directions: str = "gaussian"
  correction_layers: str = "hidden"
  block_credit: str = "own"

  def __post_init__(self):
    for value, valid in ((self.radial, RADIAL), (self.size, SIZES),
                         (self.correction, CORRECTIONS),
                         (self.correction_directions, perturb.DIRECTIONS),
                         (self.correction_layers, CORRECTION_LAYERS),
                         (self.block_credit, BLOCK_CREDITS)):
      if value not in valid:
        raise ValueError(f"Credit option {value!r}; expected one of {valid} ({self}).")

  @property
  def inactive(self) -> bool:
    return (self.radial, self.size, self.correction, self.block_credit) == (
        "keep", "own", "none", "own")


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
                                num_directions: int, directions: str = "gaussian") -> jax.Array:
  """a + (1/M) sum_v (D_v l - <a, v>) v, an unbiased estimate of g with `a` as control variate
  (at the start layers 0..S-1 of `hs_SxBxD`)."""
  v = perturb.sample_directions(key, (num_directions,) + hs_SxBxD.shape, directions)
  d_MxSxB = perturb.directional_derivatives(spec, student_params, hs_SxBxD, y, v, "jvp")
  residual_MxSxB = d_MxSxB - jnp.einsum("sbd,msbd->msb", credit_SxBxD, v)
  return credit_SxBxD + jnp.einsum("msb,msbd->sbd", residual_MxSxB, v) / num_directions


def projected_size(spec, student_params, hs_SxBxD, y, credit_SxBxD) -> jax.Array:
  """(D_u l(h_l)) u_l with u_l the unit credit, by one jvp from every layer l < S."""
  u = student_lib.unit(credit_SxBxD)
  losses_from = lambda hs: student_lib.losses_from_layers(spec, student_params, hs, y)
  slope_SxB = jax.jvp(losses_from, (hs_SxBxD,), (u,))[1]
  return slope_SxB[..., None] * u


def with_options(estimator: base.CreditEstimator,
                 options: CreditOptions = CreditOptions()) -> base.CreditEstimator:
  """`estimator` whose credit at the hidden layers is post-processed by `options`."""
  if options.inactive:
    return estimator
  own_credit, o = estimator.credit, options

  def credit(phi, student_params, acts, key):
    corrected = o.correction == "forward_gradient"
    # With a correction the key becomes a parent of two named leaves (rng.py); without one the
    # estimator gets its key as it would alone, so its numbers do not change.
    k_credit, k_correction = rng.leaves(key, "credit", "correction") if corrected else (key, None)
    a = own_credit(phi, student_params, acts, k_credit)
    if o.block_credit == "delta_L":
      a = a.at[1:].set(jnp.broadcast_to(acts.delta_L, a[1:].shape))
    # The correction's layers: every hidden one, or the embedding's a_0 alone.
    last = 1 if o.correction_layers == "embedding" else a.shape[0] - 1
    if corrected:
      a = a.at[:last].set(forward_gradient_correction(
          estimator.spec, student_params, acts.hs[:last], acts.y, a[:last], k_correction,
          o.correction_M, o.correction_directions))
    hidden, hs = a[:-1], acts.hs[:-1]
    if o.radial != "keep":
      hidden = remove_radial(hidden, hs, with_mean=o.radial == "remove_with_mean")
    if o.size == "projected":
      hidden = projected_size(estimator.spec, student_params, hs, acts.y, hidden)
    return a.at[:-1].set(hidden)

  return estimator._replace(credit=credit)
