"""Direct vector credit field Vec_M (DESIGN.md §2; the second memo's recommendation).

a_l = n * a_phi(h_l, t_l, s), with n = `credit_net.credit_scale` (||delta_L|| per sample):
the net regresses on targets in units of n, so the regression is the same whatever the
loss's scale, and the credit comes back at the true gradient's scale. In those units
(hats: divided by n), with M directions v per layer and sample,

  L_terminal     = mean_b ||a_phi(h_L, 1, s) - delta^_L||^2
  L_perturbation = (1/L) sum_{l<L} mean_b  R_l,   with R_l one of (`regression`)
      forward_gradient  ||a_phi(h_l) - (1/M) sum_v D^_v l(h_l) v||^2
      directional       (1/M) sum_v (<a_phi(h_l), v> - D^_v l(h_l))^2        (the memo's)
  L_smoothness   = (1/L) sum_{l<L} mean_b ||a(h_{l+1/2}) - (a(h_l) + a(h_{l+1})) / 2||^2
  L_contrastive  = (1/L) sum_{l<L} mean_b softplus((Vbar(h_l + r a^) - Vbar(h_l - r a^)) / tau)
  L_total        = L_terminal + beta L_perturbation + smoothness L_smoothness
                   + contrastive (L_contrastive + L_value)

Both regressions have the same minimiser a_phi = E[g^_l] (E[v v^T] = I). With exact
targets the gradient noise of `directional` is proportional to ||a - g^||^2 and vanishes as
the field learns, while `forward_gradient` regresses on an estimate whose own noise
(~ (D/M) ||g^||^2) never does: `directional` learns faster (measured in the pivot ablation).
Targets come from forward passes only
(`perturb.directional_derivatives`): all M x L forward-from-layer passes are one vmapped
computation. `contrastive` (the memo's fourth alternative) adds a value output V to the
net, regressed on the (normalised) losses of the unperturbed and perturbed passes, and
asks a^ to point downhill on its EMA copy Vbar at radius r = eps sqrt(D), the length of
the fd perturbations. Options: a residual parameterisation (a = delta_L + n a_phi);
`learn_terminal=False` (default) returns delta_L itself at layer L, where it is exact.
"""
import dataclasses

import jax
import jax.numpy as jnp

from creditfield import credit_net
from creditfield import perturb
from creditfield import rng
from creditfield import student as student_lib
from creditfield.estimators import base

REGRESSIONS = ("forward_gradient", "directional")


@dataclasses.dataclass(frozen=True)
class VectorFieldConfig:
  net: credit_net.CreditNetConfig = credit_net.CreditNetConfig()
  num_directions: int = 4
  directions: str = "gaussian"
  targets: str = "fd"
  eps: float = 1e-2
  regression: str = "directional"
  beta: float = 1.0
  smoothness: float = 0.0
  contrastive: float = 0.0
  contrastive_tau: float = 0.1
  residual: bool = False


def vector_field(spec: student_lib.StudentSpec, cfg: VectorFieldConfig) -> base.CreditEstimator:
  spec = spec.with_guard(True)
  depth, width = spec.depth, spec.width
  net = cfg.net.network(width + (1 if cfg.contrastive else 0), depth)
  scale_of = cfg.net.scale

  def outputs(phi, hs_SxBxD, t_S, acts, scale_Bx1):
    """The field in units of the sample's scale (S, B, D), and the value output (S, B)."""
    s = credit_net.conditioning(cfg.net.conditioning, acts, spec)
    out = credit_net.apply_over_layers(net, phi, hs_SxBxD, t_S, s)
    a = out[..., :width]
    if cfg.residual:
      a = a + acts.delta_L / scale_Bx1
    return a, (out[..., width] if cfg.contrastive else None)

  init = credit_net.initializer(net, cfg.net.conditioning, spec)

  def credit(phi, student_params, acts, key):
    del student_params, key
    scale = scale_of(acts)
    a = outputs(phi, acts.hs, credit_net.layer_times(depth), acts, scale)[0] * scale
    return a if cfg.net.learn_terminal else a.at[depth].set(acts.delta_L)

  def loss(phi, ema_phi, student_params, acts, key):
    scale = scale_of(acts)
    m = cfg.num_directions
    v = perturb.sample_directions(rng.stream(key, "directions"),
                                  (m, depth) + acts.hs.shape[1:], cfg.directions)
    targets_MxLxB = jax.lax.stop_gradient(perturb.directional_derivatives(
        spec, student_params, acts.hs[:depth], acts.y, v, cfg.targets, cfg.eps,
        base_B=acts.loss)) / scale[:, 0]
    t = credit_net.layer_times(depth)
    a, values = outputs(phi, acts.hs, t, acts, scale)
    terminal = jnp.sum(jnp.square(a[depth] - acts.delta_L / scale), -1).mean()
    predicted_MxLxB = jnp.einsum("lbd,mlbd->mlb", a[:depth], v)
    if cfg.regression == "directional":
      perturbation = jnp.square(predicted_MxLxB - targets_MxLxB).mean(axis=(0, 2)).sum() / depth
    else:
      forward_gradient = jnp.einsum("mlb,mlbd->lbd", targets_MxLxB, v) / m
      perturbation = jnp.sum(jnp.square(a[:depth] - forward_gradient), -1).mean(-1).sum() / depth
    total = terminal + cfg.beta * perturbation
    # 1 - R^2 of the directional targets: 1 is no better than their mean, 0 is exact.
    target_fvu = (jnp.mean(jnp.square(jax.lax.stop_gradient(predicted_MxLxB) - targets_MxLxB))
                  / (jnp.var(targets_MxLxB) + 1e-30))
    metrics = {"terminal": terminal, "perturbation": perturbation, "target_fvu": target_fvu}
    if cfg.smoothness:
      midpoints = 0.5 * (acts.hs[:-1] + acts.hs[1:])
      a_mid = outputs(phi, midpoints, (jnp.arange(depth) + 0.5) / depth, acts, scale)[0]
      smooth = jnp.sum(jnp.square(a_mid - 0.5 * (a[:-1] + a[1:])), -1).mean(-1).sum() / depth
      total = total + cfg.smoothness * smooth
      metrics["smoothness"] = smooth
    if cfg.contrastive:
      contrastive, value = _contrastive_terms(
          net, cfg, spec, phi, ema_phi, acts, scale, a, values, v, targets_MxLxB)
      total = total + cfg.contrastive * (contrastive + value)
      metrics.update(contrastive=contrastive, value=value)
    metrics["total"] = total
    return total, metrics

  return base.CreditEstimator("vector_field", spec, init, credit, loss)


def _contrastive_terms(net, cfg, spec, phi, ema_phi, acts, scale, a, values, v, targets_MxLxB):
  """The memo's soft contrastive term on the EMA value Vbar, and the value regression that
  trains V (on the losses of the unperturbed and of the fd-perturbed passes, in units of n)."""
  depth = spec.depth
  t = credit_net.layer_times(depth)
  s = credit_net.conditioning(cfg.net.conditioning, acts, spec)
  loss_n = acts.loss / scale[:, 0]
  value = jnp.square(values - loss_n).mean()
  perturbed_V = jax.vmap(lambda v_LxBxD: credit_net.apply_over_layers(
      net, phi, acts.hs[:depth] + cfg.eps * v_LxBxD, t[:depth], s)[..., -1])(v)
  value = value + jnp.square(perturbed_V - (loss_n + cfg.eps * targets_MxLxB)).mean()
  radius = cfg.eps * jnp.sqrt(spec.width)
  # A smooth unit vector: the field starts at exactly 0, where a / ||a|| has no gradient.
  direction = a[:depth] * jax.lax.rsqrt(jnp.sum(jnp.square(a[:depth]), -1, keepdims=True) + 1e-6)
  step = radius * direction
  v_bar = lambda hs: credit_net.apply_over_layers(net, ema_phi, hs, t[:depth], s)[..., -1]
  downhill = (v_bar(acts.hs[:depth] + step) - v_bar(acts.hs[:depth] - step)) / cfg.contrastive_tau
  return jax.nn.softplus(downhill).mean(), value
