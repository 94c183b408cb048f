"""Scalar credit bridge ScalarCB (DESIGN.md §2): a_l = n * grad_h V_phi(h_l, t_l, s).

V is a value in units of the sample's scale n = `credit_net.credit_scale` (||delta_L||),
so the regression is the same whatever the loss's scale (see credit_net):

  bridge   (1/L) sum_{l<L} mean_b (V(h_l, t_l) - sg softmin_tau_k Vbar(h_{l+1} + sigma xi_k, t_{l+1}))^2
  value    mean_b (V(h_L, 1) - l / n)^2
  gradient mean_b ||grad_h V(h_L, 1) - delta_L / n||^2

softmin_tau(u_1..u_K) = -tau log((1/K) sum_k exp(-u_k / tau)); Vbar is the EMA of V.
The credit is the gradient of the credit net with respect to its own input, so
nothing differentiates through the student's hidden blocks. With `learn_terminal=False`
(default) the credit at layer L is delta_L itself, where it is exact.
"""
import dataclasses

import jax
import jax.numpy as jnp

from creditfield import credit_net
from creditfield import student as student_lib
from creditfield.estimators import base


@dataclasses.dataclass(frozen=True)
class ScalarBridgeConfig:
  net: credit_net.CreditNetConfig = credit_net.CreditNetConfig(scale_floor=0.1)
  num_noise: int = 4
  tau: float = 0.1
  sigma: float = 0.1
  bridge_weight: float = 1.0
  value_weight: float = 1.0
  gradient_weight: float = 1.0


def softmin(u_KxB: jax.Array, tau: float) -> jax.Array:
  log_k = jnp.log(u_KxB.shape[0])
  return -tau * (jax.nn.logsumexp(-u_KxB / tau, axis=0) - log_k)


def scalar_bridge(spec: student_lib.StudentSpec, cfg: ScalarBridgeConfig) -> base.CreditEstimator:
  spec = spec.with_guard(True)
  depth = spec.depth
  net = cfg.net.network(1, depth)

  def values(phi, hs_SxBxD, t_S, s):
    return credit_net.apply_over_layers(net, phi, hs_SxBxD, t_S, s)[..., 0]

  def value_and_credit(phi, hs_SxBxD, t_S, s):
    # Samples are independent, so the gradient of the sum is per-sample.
    def summed(hs):
      v = values(phi, hs, t_S, s)
      return v.sum(), v
    (_, v), grad = jax.value_and_grad(summed, has_aux=True)(hs_SxBxD)
    return v, grad

  scale_of = cfg.net.scale

  init = credit_net.initializer(net, cfg.net.conditioning, spec)

  def credit(phi, student_params, acts, key):
    del student_params, key
    s = credit_net.conditioning(cfg.net.conditioning, acts, spec)
    a = value_and_credit(phi, acts.hs, credit_net.layer_times(depth), s)[1] * scale_of(acts)
    return a if cfg.net.learn_terminal else a.at[depth].set(acts.delta_L)

  def loss(phi, ema_phi, student_params, acts, key):
    del student_params
    s = credit_net.conditioning(cfg.net.conditioning, acts, spec)
    scale = scale_of(acts)
    t = credit_net.layer_times(depth)
    noise = cfg.sigma * jax.random.normal(key, (cfg.num_noise,) + acts.hs[1:].shape)
    targets_KxLxB = jax.vmap(lambda xi: values(ema_phi, acts.hs[1:] + xi, t[1:], s))(noise)
    bridge_target = jax.lax.stop_gradient(softmin(targets_KxLxB, cfg.tau))
    v_all, grad_all = value_and_credit(phi, acts.hs, t, s)
    bridge = jnp.square(v_all[:depth] - bridge_target).mean(-1).sum() / depth
    value = jnp.square(v_all[depth] - acts.loss / scale[:, 0]).mean()
    gradient = jnp.sum(jnp.square(grad_all[depth] - acts.delta_L / scale), -1).mean()
    total = (cfg.bridge_weight * bridge + cfg.value_weight * value
             + cfg.gradient_weight * gradient)
    return total, {"bridge": bridge, "value": value, "gradient": gradient, "total": total}

  return base.CreditEstimator("scalar_bridge", spec, init, credit, loss)
