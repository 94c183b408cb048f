"""Direct vector credit field Vec_M (DESIGN.md §2; the second memo's recommendation).

a_l = a_phi(h_l, t_l, s), trained with

  L_terminal     = mean_b ||a_phi(h_L, 1, s) - delta_L||^2
  L_perturbation = (1/L) sum_{l<L} mean_{m,b} (<a_phi(h_l, t_l, s), v> - D_v l(h_l))^2
  L_smoothness   = (1/L) sum_{l<L} mean_b ||a(h_{l+1/2}) - (a(h_l) + a(h_{l+1})) / 2||^2
  L_total        = L_terminal + beta L_perturbation + smoothness L_smoothness

with M directions per layer per sample and targets from forward passes only
(`perturb.directional_derivatives`): all M x L forward-from-layer passes are one
vmapped computation. Options: a residual parameterisation (a = delta_L + net)
and scaling the net's output by ||delta_L|| per sample.
"""
import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from creditfield import credit_net
from creditfield import perturb
from creditfield import student as student_lib
from creditfield.estimators import base

OUTPUT_SCALES = ("none", "delta_L_norm")


@dataclasses.dataclass(frozen=True)
class VectorFieldConfig:
  num_directions: int = 4
  hidden: Sequence[int] = (256, 256)
  time_dim: int = 16
  conditioning: str = "label"
  directions: str = "gaussian"
  targets: str = "fd"
  eps: float = 1e-2
  beta: float = 1.0
  smoothness: float = 0.0
  residual: bool = False
  output_scale: str = "none"

  def __post_init__(self):
    if self.num_directions < 1:
      raise ValueError(f"vector_field needs M >= 1 directions, got {self.num_directions}.")
    if self.output_scale not in OUTPUT_SCALES:
      raise ValueError(f"Unknown output_scale {self.output_scale!r}; "
                       f"expected one of {OUTPUT_SCALES}.")
    if self.targets not in perturb.METHODS:
      raise ValueError(f"Unknown targets {self.targets!r}; expected one of {perturb.METHODS}.")
    if self.conditioning not in credit_net.CONDITIONINGS:
      raise ValueError(f"Unknown conditioning {self.conditioning!r}; "
                       f"expected one of {credit_net.CONDITIONINGS}.")


def vector_field(spec: student_lib.StudentSpec, cfg: VectorFieldConfig) -> base.CreditEstimator:
  spec = spec.with_guard(True)
  net = credit_net.CreditNet(hidden=tuple(cfg.hidden), out_dim=spec.width,
                             time_dim=cfg.time_dim)
  depth = spec.depth

  def field(phi, hs_SxBxD, t_S, acts):
    s = credit_net.conditioning(cfg.conditioning, acts, spec)
    a = credit_net.apply_over_layers(net, phi, hs_SxBxD, t_S, s)
    if cfg.output_scale == "delta_L_norm":
      a = a * jnp.linalg.norm(acts.delta_L, axis=-1, keepdims=True)
    if cfg.residual:
      a = a + acts.delta_L
    return a

  init = credit_net.initializer(net, cfg.conditioning, spec)

  def credit(phi, student_params, acts, key):
    del student_params, key
    return field(phi, acts.hs, credit_net.layer_times(depth), acts)

  def loss(phi, ema_phi, student_params, acts, key):
    del ema_phi
    v = perturb.sample_directions(
        key, (cfg.num_directions, depth) + acts.hs.shape[1:], cfg.directions)
    targets_MxLxB = jax.lax.stop_gradient(perturb.directional_derivatives(
        spec, student_params, acts.hs[:depth], acts.y, v,
        cfg.targets, cfg.eps, base_B=acts.loss))
    a = credit(phi, student_params, acts, key)
    terminal = jnp.sum(jnp.square(a[depth] - acts.delta_L), -1).mean()
    predicted_MxLxB = jnp.einsum("lbd,mlbd->mlb", a[:depth], v)
    perturbation = jnp.square(predicted_MxLxB - targets_MxLxB).mean(axis=(0, 2)).sum() / depth
    total = terminal + cfg.beta * perturbation
    metrics = {"terminal": terminal, "perturbation": perturbation}
    if cfg.smoothness:
      midpoints = 0.5 * (acts.hs[:-1] + acts.hs[1:])
      a_mid = field(phi, midpoints, (jnp.arange(depth) + 0.5) / depth, acts)
      smooth = jnp.sum(jnp.square(a_mid - 0.5 * (a[:-1] + a[1:])), -1).mean(-1).sum() / depth
      total = total + cfg.smoothness * smooth
      metrics["smoothness"] = smooth
    metrics["total"] = total
    return total, metrics

  return base.CreditEstimator("vector_field", spec, init, credit, loss)
