"""Credit quality against the oracle on the same batch (DESIGN.md §3), and the one
`evaluate_credit` every study uses.

Per layer l = 0..L:
  gamma           mean_b cos(a_l, g_l)
  gamma_weighted  sum_b ||g_l|| cos(a_l, g_l) / sum_b ||g_l||   (the samples rho and nudge weigh)
  rho             Pearson corr over samples and directions v of <a_l, v> and l(h_l + sigma v) - l(h_l)
  nudge           E[l(h_l) - l(h_l - eps a^_l)] / E[l(h_l) - l(h_l - eps g^_l)]   (hats: unit norm)
The headline `mean` is over the hidden layers 0..L-1; layer L, where delta_L is exact and
output-local (and copied by several credits), is reported apart as `terminal`.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from creditfield import rng
from creditfield import student as student_lib
from creditfield.infra import sharding

METRICS = ("gamma", "gamma_weighted", "rho", "nudge")


def cosines(credit_SxBxD, oracle_SxBxD) -> jax.Array:
  """Per-sample cosine similarity, (S, B)."""
  return jnp.sum(student_lib.unit(credit_SxBxD) * student_lib.unit(oracle_SxBxD), -1)


def gamma(credit_SxBxD, oracle_SxBxD) -> jax.Array:
  """Mean per-sample cosine similarity, per layer: (S,)."""
  return cosines(credit_SxBxD, oracle_SxBxD).mean(-1)


def gamma_weighted(credit_SxBxD, oracle_SxBxD) -> jax.Array:
  """Per-sample cosines weighted by ||g||, per layer: (S,)."""
  weight = jnp.linalg.norm(oracle_SxBxD, axis=-1)
  return jnp.sum(weight * cosines(credit_SxBxD, oracle_SxBxD), -1) / (weight.sum(-1) + 1e-30)


def pearson(a_SxN, b_SxN) -> jax.Array:
  a = a_SxN - a_SxN.mean(-1, keepdims=True)
  b = b_SxN - b_SxN.mean(-1, keepdims=True)
  return jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-30)


def credit_quality(spec, student_params, acts, credit_SxBxD, oracle_SxBxD, key,
                   num_directions: int = 8, sigma: float = 1e-3,
                   nudge_eps: float = 1e-2) -> dict[str, jax.Array]:
  """gamma, gamma_weighted, rho and nudge per layer, each of shape (L+1,). Forward passes only."""
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
    moved = losses_from(hs - nudge_eps * student_lib.unit(direction_SxBxD))
    return (base_SxB - moved).mean(-1)

  nudge = decrease(credit_SxBxD) / decrease(oracle_SxBxD)
  return {"gamma": gamma(credit_SxBxD, oracle_SxBxD),
          "gamma_weighted": gamma_weighted(credit_SxBxD, oracle_SxBxD), "rho": rho,
          "nudge": nudge}


@functools.lru_cache(maxsize=128)
def _quality_fn(estimator, spec, num_directions: int, sigma: float, nudge_eps: float):
  """The jitted measurement, one per estimator (so seeds reuse the compiled program)."""
  oracle_spec = spec.with_guard(False)

  @jax.jit
  def measure(phi, student_params, x, y, key):
    x, y = sharding.shard_batch(x), sharding.shard_batch(y)
    k_credit, k_quality = rng.leaves(key, "credit", "quality")
    acts = estimator.activations(student_params, x, y)
    credit = estimator.credit(phi, student_params, acts, k_credit)
    exact = student_lib.oracle_grads(oracle_spec, student_params, x, y)
    return credit_quality(oracle_spec, student_params, acts, credit, exact, k_quality,
                          num_directions, sigma, nudge_eps)
  return measure


def evaluate_credit(estimator, student_params, x, y, phi, key, dcfg) -> dict[str, np.ndarray]:
  """Per-layer quality (L+1,) of `estimator`'s credit on the batch (x, y), as numpy arrays.

  The oracle is computed on the same batch; `key` is a leaf of the caller's stream. One
  compiled program per estimator serves every call (final measurements and monitoring).
  """
  return jax.device_get(quality_program(estimator, dcfg)(phi, student_params, x, y, key))


def quality_program(estimator, dcfg):
  """The jitted `(phi, student_params, x, y, key) -> quality` that `evaluate_credit` calls."""
  return _quality_fn(estimator, estimator.spec, dcfg.num_directions, dcfg.sigma, dcfg.nudge_eps)


def summary(quality: dict) -> dict:
  """{metric: mean over hidden layers} and {metric_terminal: value at layer L}."""
  out = {}
  for name, values in quality.items():
    values = np.asarray(values)
    out[name] = float(values[:-1].mean())
    out[f"{name}_terminal"] = float(values[-1])
  return out


def layer_rows(base: dict, quality: dict) -> list[dict]:
  """Rows for layers 0..L-1, `mean` (over those hidden layers) and `terminal` (layer L)."""
  depth = len(next(iter(quality.values()))) - 1
  rows = [dict(base, layer=l, **{m: float(v[l]) for m, v in quality.items()})
          for l in range(depth)]
  rows.append(dict(base, layer="mean",
                   **{m: float(np.mean(v[:depth])) for m, v in quality.items()}))
  rows.append(dict(base, layer="terminal", **{m: float(v[depth]) for m, v in quality.items()}))
  return rows
