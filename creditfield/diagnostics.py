"""Credit quality against the oracle on the same batch (DESIGN.md §3).

Per layer l = 0..L (and their mean):
  gamma  mean_b cos(a_l, g_l)
  rho    Pearson corr over samples and directions v of <a_l, v> and l(h_l + sigma v) - l(h_l)
  nudge  E[l(h_l) - l(h_l - eps a^_l)] / E[l(h_l) - l(h_l - eps g^_l)]   (hats: unit norm)
"""
import jax
import jax.numpy as jnp

from creditfield import student as student_lib

METRICS = ("gamma", "rho", "nudge")


def _unit(a, eps=1e-12):
  return a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + eps)


def gamma(credit_SxBxD, oracle_SxBxD) -> jax.Array:
  """Mean per-sample cosine similarity, per layer: (S,)."""
  return jnp.sum(_unit(credit_SxBxD) * _unit(oracle_SxBxD), -1).mean(-1)


def pearson(a_SxN, b_SxN) -> jax.Array:
  a = a_SxN - a_SxN.mean(-1, keepdims=True)
  b = b_SxN - b_SxN.mean(-1, keepdims=True)
  return jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-30)


def credit_quality(spec, student_params, acts, credit_SxBxD, oracle_SxBxD, key,
                   num_directions: int = 8, sigma: float = 1e-3,
                   nudge_eps: float = 1e-2) -> dict[str, jax.Array]:
  """gamma, rho and nudge per layer, each of shape (L+1,). Forward passes only."""
  hs, y = acts.hs, acts.y
  losses_from = lambda hs: student_lib.losses_from_layers(spec, student_params, hs, y)
  base_SxB = losses_from(hs)

  v = jax.random.normal(key, (num_directions,) + hs.shape)
  actual_MxSxB = jax.vmap(lambda v: losses_from(hs + sigma * v))(v)
  actual_MxSxB = actual_MxSxB - base_SxB
  predicted_MxSxB = jnp.einsum("sbd,msbd->msb", credit_SxBxD, v)
  to_SxN = lambda t: jnp.moveaxis(t, 0, 1).reshape(t.shape[1], -1)
  rho = pearson(to_SxN(predicted_MxSxB), to_SxN(actual_MxSxB))

  def decrease(direction_SxBxD):
    moved = losses_from(hs - nudge_eps * _unit(direction_SxBxD))
    return (base_SxB - moved).mean(-1)

  nudge = decrease(credit_SxBxD) / decrease(oracle_SxBxD)
  return {"gamma": gamma(credit_SxBxD, oracle_SxBxD), "rho": rho, "nudge": nudge}
