"""Random directions and directional derivatives of the loss from a layer.

`D_v l(h_l)` for M directions at start layers 0..S-1 is one computation: directions
are vmapped, and the start layers share one triangular pass through the blocks
(`student.losses_from_layers`). Methods (a `targets` option):
  fd       (l(h + eps v) - l(h)) / eps      forward finite difference (the memo's)
  central  (l(h + eps v) - l(h - eps v)) / (2 eps)
  jvp      exact forward-mode jax.jvp of the same pass
All use forward passes only, so they are legal under the no-hidden-BP guard.
"""
import functools

import jax
import jax.numpy as jnp

from creditfield import student as student_lib
from creditfield.infra import errors

DIRECTIONS = ("gaussian", "rademacher")
METHODS = ("fd", "central", "jvp")


def sample_directions(key, shape, kind: str = "gaussian") -> jax.Array:
  """Directions with E[v v^T] = I (so forward gradients are unbiased)."""
  if kind == "gaussian":
    return jax.random.normal(key, shape)
  if kind == "rademacher":
    return jax.random.rademacher(key, shape, dtype=jnp.float32)
  raise errors.UserError(f"Unknown direction kind {kind!r}; expected one of {DIRECTIONS}.")


def directional_derivatives(spec, params, hs_SxBxD, y, v_MxSxBxD,
                            method: str = "fd", eps: float = 1e-2, base_B=None) -> jax.Array:
  """D_v l_b(h_l) for every direction, start layer l = 0..S-1 and sample: shape (M, S, B).

  Each sample has its own direction, so one pass gives per-sample derivatives.
  `base_B`, the unperturbed per-sample loss, saves fd its unperturbed pass when
  hs are one forward pass (then the loss from every layer is the same).
  """
  losses_from = functools.partial(student_lib.losses_from_layers, spec, params)
  perturbed = jax.vmap(lambda v: losses_from(hs_SxBxD + eps * v, y))
  if method == "fd":
    base_SxB = losses_from(hs_SxBxD, y) if base_B is None else base_B[None]
    return (perturbed(v_MxSxBxD) - base_SxB[None]) / eps
  if method == "central":
    return (perturbed(v_MxSxBxD) - perturbed(-v_MxSxBxD)) / (2 * eps)
  if method == "jvp":
    def one_direction(v_SxBxD):
      f = lambda hs: losses_from(hs, y)
      return jax.jvp(f, (hs_SxBxD,), (v_SxBxD,))[1]
    return jax.vmap(one_direction)(v_MxSxBxD)
  raise errors.UserError(f"Unknown derivative method {method!r}; expected one of {METHODS}.")
