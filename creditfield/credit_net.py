"""Credit networks: [LN(h_l), time_embed(t_l), s] -> MLP -> R^out (DESIGN.md §2).

The same module gives the vector field a_phi (out = D) and the scalar value
V_phi (out = 1). `s` is the conditioning chosen by `conditioning`.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from creditfield import student as student_lib

CONDITIONINGS = ("label", "error", "delta_L")


def time_embed(t_B: jax.Array, dim: int) -> jax.Array:
  """Fixed sinusoidal embedding of layer time t in [0, 1]: (B,) -> (B, dim)."""
  freqs = jnp.pi * 2.0 ** jnp.arange(dim // 2)
  angles = t_B[:, None] * freqs
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def conditioning(kind: str, acts: student_lib.Activations, spec) -> jax.Array:
  """s per sample: one-hot label (or the regression target), e = dL/dz, or delta_L."""
  if kind == "label":
    if spec.task == "classification":
      return jax.nn.one_hot(acts.y, spec.num_outputs)
    return acts.y
  if kind == "error":
    return acts.error
  if kind == "delta_L":
    return acts.delta_L
  raise ValueError(f"Unknown conditioning {kind!r}; expected one of {CONDITIONINGS}.")


class CreditNet(nn.Module):
  """MLP on [LN(h), time_embed(t), s] with GELU; a last Linear to `out_dim`."""
  hidden: Sequence[int]
  out_dim: int
  time_dim: int = 16

  @nn.compact
  def __call__(self, h_BxD, t_B, s_BxS):
    u = jnp.concatenate(
        [student_lib.layer_norm(h_BxD), time_embed(t_B, self.time_dim), s_BxS], axis=-1)
    for width in self.hidden:
      u = nn.gelu(nn.Dense(width)(u))
    return nn.Dense(self.out_dim)(u)


def layer_times(depth: int, num_layers: int | None = None) -> jax.Array:
  """t_l = l / L for l = 0..num_layers-1 (default all L+1 layers)."""
  num_layers = depth + 1 if num_layers is None else num_layers
  return jnp.arange(num_layers) / depth


def apply_over_layers(net: CreditNet, phi, hs_SxBxD, t_S, s_BxS) -> jax.Array:
  """The net at every layer in one vmapped call: (S, B, out_dim)."""
  batch = hs_SxBxD.shape[1]
  return jax.vmap(lambda h, t: net.apply(phi, h, jnp.full((batch,), t), s_BxS))(
      hs_SxBxD, t_S)


def initializer(net: CreditNet, kind: str, spec):
  """The estimator `init(key, student_params, acts) -> phi` of a credit net."""
  def init(key, student_params, acts):
    del student_params
    s = conditioning(kind, acts, spec)
    return net.init(key, acts.hs[0], jnp.zeros(acts.hs.shape[1]), s)
  return init
