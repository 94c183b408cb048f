"""Random directions and directional derivatives of the loss from a layer.

`D_v l(h_l)` for M directions at S start layers is one vmapped computation over
(M, S): no Python loop over directions or layers. Methods (a `targets` option):
  fd       (l(h + eps v) - l(h)) / eps      forward finite difference (the memo's)
  central  (l(h + eps v) - l(h - eps v)) / (2 eps)
  jvp      exact forward-mode jax.jvp of `forward_from`
All use forward passes only, so they are legal under the no-hidden-BP guard.
"""
import jax
import jax.numpy as jnp

from creditfield import student as student_lib

DIRECTIONS = ("gaussian", "rademacher")
METHODS = ("fd", "central", "jvp")


def sample_directions(key, shape, kind: str = "gaussian") -> jax.Array:
  """Directions with E[v v^T] = I (so forward gradients are unbiased)."""
  if kind == "gaussian":
    return jax.random.normal(key, shape)
  if kind == "rademacher":
    return jax.random.rademacher(key, shape, dtype=jnp.float32)
  raise ValueError(f"Unknown direction kind {kind!r}; expected one of {DIRECTIONS}.")


def losses_from(spec, params, hs_SxBxD, layers_S, y) -> jax.Array:
  """Per-sample losses (S, B) from activations at each of S start layers."""
  return jax.vmap(
      lambda h, l: student_lib.forward_from(spec, params, h, l, y))(hs_SxBxD, layers_S)


def directional_derivatives(spec, params, hs_SxBxD, layers_S, y, v_MxSxBxD,
                            method: str = "fd", eps: float = 1e-2) -> jax.Array:
  """D_v l_b(h_l) for every direction, start layer and sample: shape (M, S, B).

  Each sample has its own direction, so one pass gives per-sample derivatives.
  """
  perturbed = jax.vmap(
      lambda v: losses_from(spec, params, hs_SxBxD + eps * v, layers_S, y))
  if method == "fd":
    base_SxB = losses_from(spec, params, hs_SxBxD, layers_S, y)
    return (perturbed(v_MxSxBxD) - base_SxB[None]) / eps
  if method == "central":
    return (perturbed(v_MxSxBxD) - perturbed(-v_MxSxBxD)) / (2 * eps)
  if method == "jvp":
    def one_direction(v_SxBxD):
      f = lambda hs: losses_from(spec, params, hs, layers_S, y)
      return jax.jvp(f, (hs_SxBxD,), (v_SxBxD,))[1]
    return jax.vmap(one_direction)(v_MxSxBxD)
  raise ValueError(f"Unknown derivative method {method!r}; expected one of {METHODS}.")
