"""Credits that run a backward pass through the blocks of their own kind: controls, labelled
as such (estimators.BACKPROP says what each uses).

fa (feedback alignment, Lillicrap et al. 2016): the backward pass of backprop with fixed
random matrices in place of the transposed weights,
    a_L = delta_L,   a_l = a_{l+1} + J_LN(h_l)^T (s_l * (B1_l ((a_{l+1} B2_l) * gelu'(z_l)))),
z_l = LN(h_l) W1 + b1 the block's pre-activation, s_l its LayerNorm scale; B2_l (D x H) stands
for W2^T and B1_l (H x D) for W1^T, drawn as those weights are at init. The LayerNorm's own
Jacobian (no weights in it) is exact. With B = W^T it is backprop exactly (tests).

dni (synthetic gradients, Jaderberg et al. 2017, label-conditioned): a credit net a_phi
trained online to predict the credit, in units of n = ||delta_L|| per sample (as the vector
field), regressed on delta_L at layer L and, below, on the bootstrapped target
    a*_l = J_l^T a_{l+1} = a_{l+1} + vjp(F_l, h_l)(a_{l+1}),   a_L = delta_L,
a one-block backward pass (through block l alone) of its own prediction at l + 1.
"""
import jax
import jax.numpy as jnp

from creditfield import credit_net
from creditfield import rng
from creditfield import student as student_lib
from creditfield.estimators import base


def gelu_slope(z):
  """gelu'(z) elementwise (the student's gelu, tanh approximation)."""
  return jax.jvp(jax.nn.gelu, (z,), (jnp.ones_like(z),))[1]


def feedback_credit(spec, student_params, acts, feedback) -> jax.Array:
  """FA's backward pass with `feedback` = {"b1": (L, H, D), "b2": (L, D, H)}: (L+1, B, D)."""
  def back(a_next, inputs):
    p, h, b1, b2 = inputs
    u, ln_vjp = jax.vjp(student_lib.layer_norm, h)
    z = (u * p["ln_scale"] + p["ln_bias"]) @ p["w1"] + p["b1"]
    d_z = (a_next @ b2) * gelu_slope(z)
    a = a_next + ln_vjp((d_z @ b1) * p["ln_scale"])[0]
    return a, a

  depth = spec.depth
  _, a_hidden = jax.lax.scan(back, acts.delta_L, (student_params["blocks"], acts.hs[:depth],
                                                  feedback["b1"], feedback["b2"]), reverse=True)
  return jnp.concatenate([a_hidden, acts.delta_L[None]])


def fa(spec: student_lib.StudentSpec) -> base.CreditEstimator:
  spec = spec.with_guard(False)
  d, h, depth = spec.width, spec.expansion * spec.width, spec.depth

  def init(key, student_params, acts):
    del student_params, acts
    k1, k2 = rng.leaves(key, "b1", "b2")
    return {"b1": jax.random.normal(k1, (depth, h, d)) / jnp.sqrt(d),
            "b2": jax.random.normal(k2, (depth, d, h)) / jnp.sqrt(h)}

  def credit(phi, student_params, acts, key):
    del key
    return feedback_credit(spec, student_params, acts, phi)

  return base.CreditEstimator("fa", spec, init, credit)


def block_vjps(student_params, hs_LxBxD, cotangents_LxBxD) -> jax.Array:
  """vjp(F_l, h_l)(c_l) for every block l at once: (L, B, D). One block each, never a chain."""
  def one(block_params, h, c):
    return jax.vjp(lambda x: student_lib.block_residual(block_params, x), h)[1](c)[0]
  return jax.vmap(one)(student_params["blocks"], hs_LxBxD, cotangents_LxBxD)


def dni(spec: student_lib.StudentSpec, cfg: credit_net.CreditNetConfig) -> base.CreditEstimator:
  spec = spec.with_guard(False)
  depth = spec.depth
  net = cfg.network(spec.width, depth)

  def predict(phi, acts):
    """(a_phi in units of n over layers 0..L, n of shape (B, 1))."""
    scale = cfg.scale(acts)
    s = credit_net.conditioning(cfg.conditioning, acts, spec)
    return credit_net.apply_over_layers(net, phi, acts.hs, credit_net.layer_times(depth), s), scale

  def credit(phi, student_params, acts, key):
    del student_params, key
    a, scale = predict(phi, acts)
    return (a * scale).at[depth].set(acts.delta_L)

  def loss(phi, ema_phi, student_params, acts, key):
    del ema_phi, key
    a, scale = predict(phi, acts)
    delta_n = acts.delta_L / scale
    terminal = jnp.sum(jnp.square(a[depth] - delta_n), -1).mean()
    above = jax.lax.stop_gradient(jnp.concatenate([a[1:depth], delta_n[None]]))
    target = above + block_vjps(student_params, acts.hs[:depth], above)
    bootstrap = jnp.sum(jnp.square(a[:depth] - target), -1).mean(-1).sum() / depth
    total = terminal + bootstrap
    return total, {"terminal": terminal, "bootstrap": bootstrap, "total": total}

  init = credit_net.initializer(net, cfg.conditioning, spec)
  return base.CreditEstimator("dni", spec, init, credit, loss)
