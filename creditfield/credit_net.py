"""Credit networks: [LN(h_l), layer_embed(t_l), s] -> MLP -> R^out (DESIGN.md §2), and the
per-sample scale that makes the learned estimators scale-free.

The same module gives the vector field a_phi (out = D) and the scalar value V_phi
(out = 1). `s` is the conditioning chosen by `conditioning`.

Scale. Per-sample gradients can be tiny (CIFAR-10 snapshot: ||g_l|| ~ 0.13 with
||h_l|| ~ 110), and a regression on raw gradients is dominated by the few samples
with large ones while Gamma weighs every sample alike. Both learned estimators therefore
regress on targets divided by each sample's `credit_scale` (||delta_L||, output-local)
and multiply their output back: the net's output is O(1) whatever the loss's scale, and
scaling the loss by any c leaves the learned field unchanged.
"""
import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from creditfield import student as student_lib
from creditfield.infra import errors

CONDITIONINGS = ("label", "error", "delta_L", "label_delta_L")
LAYER_EMBEDDINGS = ("learned", "sinusoidal")
NORMALIZATIONS = ("delta_L", "none")


def credit_scale(kind: str, delta_L_BxD: jax.Array, floor: float) -> jax.Array:
  """Per-sample scale (B, 1) of the learned estimators' targets.

  `delta_L`: ||delta_L||, floored at `floor` times the batch's RMS of it (and never below
  1e-6 of it, where a sample's delta_L is 0 in float32). With floor 0 every sample weighs the
  same in the regression, as in Gamma, a per-sample cosine: the vector field's default (0.1
  shrank the targets of the samples the snapshot fits well and cost it hidden-layer Gamma on
  both tasks). The scalar bridge, whose value consistency runs through those samples too,
  keeps 0.1, where it learns better (docs/results/scale_floor.md).
  `none`: 1 (raw targets; the old, scale-dependent regression, kept for the ablation).
  """
  if kind == "none":
    return jnp.ones(delta_L_BxD.shape[:-1] + (1,), delta_L_BxD.dtype)
  if kind != "delta_L":
    raise errors.UserError(f"Unknown normalization {kind!r}; expected one of {NORMALIZATIONS}.")
  norm = jnp.linalg.norm(delta_L_BxD, axis=-1, keepdims=True)
  rms = jnp.sqrt(jnp.mean(jnp.square(norm)))
  return jax.lax.stop_gradient(jnp.maximum(norm, max(floor, 1e-6) * rms) + 1e-30)


def conditioning(kind: str, acts: student_lib.Activations, spec) -> jax.Array:
  """s per sample; every choice is scale-free in the loss.

  label: one-hot y (or the regression target); error: e = dL/dz; delta_L: the direction
  delta_L / ||delta_L||, times sqrt(D) so that its entries are O(1) like LN(h)'s;
  label_delta_L: both one-hot label and that direction.
  """
  if kind == "label":
    if spec.task == "classification":
      return jax.nn.one_hot(acts.y, spec.num_outputs)
    return acts.y
  if kind == "error":
    return acts.error
  if kind == "delta_L":
    return student_lib.unit(acts.delta_L) * jnp.sqrt(acts.delta_L.shape[-1])
  if kind == "label_delta_L":
    return jnp.concatenate([conditioning("label", acts, spec),
                            conditioning("delta_L", acts, spec)], -1)
  raise errors.UserError(f"Unknown conditioning {kind!r}; expected one of {CONDITIONINGS}.")


def sinusoidal_embed(t_B: jax.Array, dim: int, depth: int) -> jax.Array:
  """Fixed sinusoidal features of t in [0, 1], frequencies pi/2 .. pi*depth, so that every
  feature varies over the layer grid t = l/L (powers of two would repeat on it)."""
  freqs = jnp.pi * jnp.linspace(0.5, depth, dim // 2)
  angles = t_B[:, None] * freqs
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


@dataclasses.dataclass(frozen=True)
class CreditNetConfig:
  """What every learned credit's network is (`vector_field`, `scalar_bridge`, `dni`): built
  once from `config.credit` by `estimators.make`, with each estimator's own width and floor.

  `conditioning`: what `s` is; `normalization`, `scale_floor`: the per-sample scale
  (`credit_scale`); `learn_terminal`: learn a_L too (else a_L = delta_L); the rest: `CreditNet`.
  """
  hidden: Sequence[int] = (256, 256)
  time_dim: int = 16
  embedding: str = "learned"
  conditioning: str = "label_delta_L"
  normalization: str = "delta_L"
  scale_floor: float = 0.0
  output_init: float = 0.0
  learn_terminal: bool = False
  stream_scale: bool = False

  def network(self, out_dim: int, depth: int) -> "CreditNet":
    return CreditNet(hidden=tuple(self.hidden), out_dim=out_dim, depth=depth,
                     time_dim=self.time_dim, embedding=self.embedding,
                     output_init=self.output_init, stream_scale=self.stream_scale)

  def scale(self, acts: student_lib.Activations) -> jax.Array:
    """Each sample's scale (B, 1): targets are divided by it, outputs multiplied back."""
    return credit_scale(self.normalization, acts.delta_L, self.scale_floor)


class CreditNet(nn.Module):
  """MLP on [LN(h), layer embedding of t, s] with GELU; a last Linear to `out_dim`.

  `embedding="learned"`: a table of one vector per layer 0..depth, interpolated linearly
  between layers (t = l/L need not be an integer layer: smoothness uses midpoints).
  `output_init`: the last layer's weights are LeCun-normal times this (0: zeros, so the
  untrained net outputs 0, not O(1) noise that the regression must first unlearn).
  `stream_scale`: also feed log std(h) per sample, the scale LN(h) hides (a pre-LN block's
  Jacobian, and so the true credit below it, shrinks as the residual stream grows).
  """
  hidden: Sequence[int]
  out_dim: int
  depth: int
  time_dim: int = 16
  embedding: str = "learned"
  output_init: float = 0.0
  stream_scale: bool = False

  def layer_embedding(self, t_B):
    if self.embedding == "sinusoidal":
      return sinusoidal_embed(t_B, self.time_dim, self.depth)
    table = self.param("layer_embedding", nn.initializers.normal(1.0),
                       (self.depth + 1, self.time_dim))
    position = jnp.clip(t_B * self.depth, 0, self.depth)
    low = jnp.clip(jnp.floor(position), 0, self.depth - 1)[:, None]
    frac = position[:, None] - low
    # Interpolation weights times the table, not table[low]: a gather's gradient is a
    # scatter-add, which a GPU sums in no fixed order (docs/benchmarks/h200_2026-12-03e.md).
    layers = jnp.arange(self.depth + 1)
    weights_BxL = (1 - frac) * (layers == low) + frac * (layers == low + 1)
    return (weights_BxL[:, :, None] * table).sum(1)

  @nn.compact
  def __call__(self, h_BxD, t_B, s_BxS):
    features = [student_lib.layer_norm(h_BxD), self.layer_embedding(t_B), s_BxS]
    if self.stream_scale:
      features.append(jnp.log(jnp.std(h_BxD, axis=-1, keepdims=True) + 1e-6))
    u = jnp.concatenate(features, axis=-1)
    for width in self.hidden:
      u = nn.gelu(nn.Dense(width)(u))
    kernel_init = nn.initializers.variance_scaling(self.output_init ** 2, "fan_in",
                                                   "truncated_normal")
    return nn.Dense(self.out_dim, kernel_init=kernel_init)(u)


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
